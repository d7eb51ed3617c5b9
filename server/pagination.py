"""Keyset pagination cursors: opaque, URL-safe, validated."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from server.errors import ValidationFailed

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise ValidationFailed(
            "Invalid cursor", details=[{"field": "query.cursor", "message": "invalid cursor"}]
        )
    return values


async def newest_first(
    session: AsyncSession,
    stmt: Select[Any],
    id_column: InstrumentedAttribute[int],
    before: int | None,
    limit: int,
) -> Page[Any]:
    """One page of `stmt`, newest (highest id) first, below `before`; `next_cursor` encodes the
    last id when more rows follow."""
    if before is not None:
        stmt = stmt.where(id_column < before)
    rows = list((await session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1))).all())
    items = rows[:limit]
    last = getattr(items[-1], id_column.key) if items else None
    return Page(items, encode_id_cursor(last) if len(rows) > limit and last else None)


def before_cursor(cursor: str | None) -> int | None:
    return decode_id_cursor(cursor) if cursor else None


def encode_id_cursor(last_id: int) -> str:
    return encode_cursor([last_id])


def decode_id_cursor(cursor: str) -> int:
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 2**63 - 1:
        raise ValidationFailed(
            "Invalid cursor", details=[{"field": "query.cursor", "message": "invalid cursor"}]
        )
    return value
