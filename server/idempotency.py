"""`Idempotency-Key` for POSTs that create things (scope: the user; kept 24 hours).

The key is claimed with an INSERT in the same transaction as the change: a second request with
the same key blocks on the unique key until the first commits, then replays its stored answer.
The same key with another body is 422, checked before anything else. Refusals (4xx) are stored
too, so a retry gets the answer first given."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models import IdempotencyKey
from server.db import commit
from server.errors import AppError, Conflict, ValidationFailed, error_body

KEEP = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Stored:
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: Any) -> str:
    raw = f"{method} {path}\n".encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def _check_key(key: str) -> None:
    if not (0 < len(key) <= MAX_KEY_LENGTH) or not key.isprintable():
        raise ValidationFailed(
            "Idempotency-Key must be 1..255 printable characters",
            details=[{"field": "header.idempotency-key", "message": "invalid key"}],
        )


async def _claim(session: AsyncSession, user_id: int, key: str, digest: str) -> Stored | None:
    """None: this request owns the key. Otherwise the stored answer of the first request."""
    cutoff = datetime.now(UTC) - KEEP
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at < cutoff,
        )
    )
    claimed = await session.execute(
        insert(IdempotencyKey)
        .values(user_id=user_id, key=key, request_hash=digest)
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    if claimed.first() is not None:
        return None
    row = (
        await session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
            )
        )
    ).scalar_one()
    if row.request_hash != digest:
        raise ValidationFailed(
            "Idempotency-Key was already used with a different request",
            details=[{"field": "header.idempotency-key", "message": "reused with another body"}],
        )
    if row.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still in flight")
    return Stored(row.status_code, row.response)


async def _store(session: AsyncSession, user_id: int, key: str, answer: Stored) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(status_code=answer.status_code, response=answer.body)
    )


async def _store_refusal(
    session: AsyncSession, user_id: int, key: str, digest: str, answer: Stored
) -> None:
    await session.execute(
        insert(IdempotencyKey)
        .values(
            user_id=user_id,
            key=key,
            request_hash=digest,
            status_code=answer.status_code,
            response=answer.body,
        )
        .on_conflict_do_nothing()
    )
    await session.commit()


async def create(
    session: AsyncSession,
    user_id: int,
    key: str | None,
    request: Request,
    body: BaseModel,
    action: Callable[[], Awaitable[dict[str, Any]]],
    *,
    sent_fields_only: bool = False,
) -> JSONResponse:
    """Run a creating `action` (which must not commit) exactly once per key; 201 on success.
    The request is identified by its method, path and parsed body (with `sent_fields_only`,
    only the fields the client sent, so an explicit default is "another body")."""
    digest = ""  # only a keyed request is fingerprinted
    if key is not None:
        _check_key(key)
        dumped = body.model_dump(mode="json", exclude_unset=sent_fields_only)
        digest = fingerprint(request.method, request.url.path, dumped)
        stored = await _claim(session, user_id, key, digest)
        if stored is not None:
            return _Json(stored.body, status_code=stored.status_code)
    try:
        created = await action()
    except AppError as exc:
        await session.rollback()
        if key is not None and exc.status < 500:
            refusal = Stored(exc.status, error_body(exc.code, exc.message, exc.details))
            await _store_refusal(session, user_id, key, digest, refusal)
        raise
    if key is not None:
        await _store(session, user_id, key, Stored(201, created))
    await commit(session)
    return _Json(created, status_code=201)


class _Json(JSONResponse):
    """orjson instead of the standard library's json (the views are JSON-ready already)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
