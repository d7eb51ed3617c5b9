"""Single-use WebSocket tickets, kept where every instance can consume them exactly once."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from redis.exceptions import RedisError

from channels.brokers import RedisClient


@dataclass(frozen=True, slots=True)
class Ticket:
    user_id: int
    token_expires_at: datetime
    session_id: str | None = None  # the `sid` of the access token that asked for it


class TicketStoreUnavailable(Exception):
    """The shared store cannot be reached: no ticket can be issued or consumed (503)."""


class TicketStore(Protocol):
    async def put(self, ticket: Ticket, ttl_s: int) -> str:
        """Store a ticket; returns its opaque id."""

    async def take(self, ticket_id: str) -> Ticket | None:
        """Consume a ticket: the first caller (on any instance) gets it, later ones None.
        Raises TicketStoreUnavailable when the store cannot be reached."""


def _new_id() -> str:
    return secrets.token_urlsafe(32)


def _encode(ticket: Ticket) -> str:
    data = {"u": ticket.user_id, "e": ticket.token_expires_at.isoformat()}
    if ticket.session_id is not None:
        data["s"] = ticket.session_id
    return json.dumps(data)


def _decode(raw: str | bytes) -> Ticket:
    data = json.loads(raw)
    sid = data.get("s")
    return Ticket(int(data["u"]), datetime.fromisoformat(data["e"]), None if sid is None else sid)


class MemoryTicketStore:
    """For a single instance (the embedded default)."""

    def __init__(self) -> None:
        self._tickets: dict[str, tuple[float, Ticket]] = {}

    async def put(self, ticket: Ticket, ttl_s: int) -> str:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
        ticket_id = _new_id()
        self._tickets[ticket_id] = (now + ttl_s, ticket)
        return ticket_id

    async def take(self, ticket_id: str) -> Ticket | None:
        entry = self._tickets.pop(ticket_id, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]


class RedisTicketStore:
    """Shared by every instance; GETDEL makes consumption atomic."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "wst:"

    async def put(self, ticket: Ticket, ttl_s: int) -> str:
        ticket_id = _new_id()
        try:
            await self._redis.set(self._prefix + ticket_id, _encode(ticket), ex=ttl_s)
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(str(exc)) from exc
        return ticket_id

    async def take(self, ticket_id: str) -> Ticket | None:
        if len(ticket_id) > 128:
            return None
        try:
            raw = await self._redis.getdel(self._prefix + ticket_id)
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(str(exc)) from exc
        return None if raw is None else _decode(raw)
