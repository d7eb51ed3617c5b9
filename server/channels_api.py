"""REST face of the realtime layer: replay over HTTP (metrics: server/monitoring.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from channels import ChannelError, Realtime, events
from server.deps import ReadSessionDep, UserId
from server.errors import AppError
from server.replica import ReadsDep

router = APIRouter(tags=["realtime"])

_STATUS = {"bad_request": 400, "forbidden": 403, "not_found": 404}


def _realtime(request: Request) -> Realtime:
    realtime: Realtime = request.app.state.realtime
    return realtime


def channel_error(exc: ChannelError) -> AppError:
    error = AppError(exc.message)
    error.status = _STATUS.get(exc.code.value, 400)
    error.code = exc.code.value
    return error


@router.get("/api/v1/channels/{channel}/events")
async def replay(
    channel: str,
    request: Request,
    user_id: UserId,
    session: ReadSessionDep,
    reads: ReadsDep,
    since: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The socket's replay over HTTP: events with seq > since, in order, `limit` at a time.
    Lag-safe on a read replica: never fewer events than the primary holds (docs/decisions.md
    D39)."""
    realtime = _realtime(request)
    try:
        resolved = realtime.registry.resolve(channel)
        if not resolved.durable:
            raise AppError(f"{channel} is live only: nothing to replay")
        state = await events.state(session, channel)
        # The state is read before the rule (as a socket subscribe does); the connection goes
        # back to the pool first, since the rule opens its own: a request never holds two.
        await session.commit()
        await realtime.registry.authorize(user_id, resolved)
    except ChannelError as exc:
        raise channel_error(exc) from exc
    recovered = state.trimmed <= since <= state.head
    start = max(since, state.trimmed)
    rows: list[events.StoredEvent] = []
    if since < state.head:
        # The head and the retention mark come from the primary (a socket may have been sent
        # every event up to it); the events themselves from the read replica when it has them
        # all. Seqs have no gaps above the retention mark, so a complete page holds exactly
        # `expected` events; a replica behind the head serves fewer and is passed over.
        expected = min(limit, state.head - start)
        rows = await reads.run(
            lambda s: events.replay(s, channel, start, state.head, limit),
            accept=lambda page: len(page) == expected,
        )
        if len(rows) != expected:  # retention trimmed the start since the state was read
            recovered = False
    last = rows[-1].event.seq if rows else None
    return {
        "items": [row.event.to_frame() for row in rows],
        "latest_seq": state.head,
        "recovered": recovered,
        "next_since": last if last is not None and last < state.head else None,
    }
