"""The REST replay (`GET /api/v1/channels/{channel}/events`), one page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx

from kuda.client.tokens import TokenSource
from kuda.client.types import Frame, ServerError

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ReplayPage:
    items: list[Frame]
    latest_seq: int
    recovered: bool
    next_since: int | None


class Replayer:
    def __init__(self, http: httpx.AsyncClient, tokens: TokenSource) -> None:
        self._http = http
        self._tokens = tokens

    async def page(self, channel: str, since: int, limit: int = MAX_PAGE) -> ReplayPage:
        """Events with seq > since. Raises `ServerError` when the server refuses the channel
        (400, 403, 404) and `httpx.HTTPError` for what a retry may cure."""
        path = f"/api/v1/channels/{quote(channel, safe=':')}/events"
        params = {"since": since, "limit": max(1, min(limit, MAX_PAGE))}
        token = self._tokens.current or await self._tokens.fresh()
        response = await self._http.get(path, params=params, headers=_bearer(token.value))
        if response.status_code == 401:  # expired meanwhile: one fresh token, one more try
            token = await self._tokens.fresh()
            response = await self._http.get(path, params=params, headers=_bearer(token.value))
        if response.status_code in (400, 403, 404):
            error = _error(response)
            raise ServerError(error.get("code", "bad_request"), error.get("message", ""))
        response.raise_for_status()
        body = response.json()
        return ReplayPage(
            items=list(body["items"]),
            latest_seq=int(body["latest_seq"]),
            recovered=bool(body["recovered"]),
            next_since=body["next_since"],
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx.Response) -> dict[str, str]:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {"message": response.text[:200]}
    return error if isinstance(error, dict) else {}
