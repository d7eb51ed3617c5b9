"""The one place where the domain tells channels/ who may read what (PROTOCOL.md section 3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import Access, ChannelError, ChannelRegistry, ErrorCode, ResolvedChannel
from channels.authz import Params
from models import Ride, User
from server import channel_names
from server.chat import service as chat
from server.errors import AppError
from server.ratelimit import WriteLimit

_CODES = {
    "not_found": ErrorCode.NOT_FOUND,
    "forbidden": ErrorCode.FORBIDDEN,
    "validation_error": ErrorCode.VALIDATION_ERROR,
    "conflict": ErrorCode.CONFLICT,
    "rate_limited": ErrorCode.RATE_LIMITED,
    "too_large": ErrorCode.TOO_LARGE,
    "unauthorized": ErrorCode.UNAUTHORIZED,
}


def socket_error(exc: AppError) -> ChannelError:
    """A REST refusal as a socket error: the same code where the socket has it; a server-side
    failure (5xx, e.g. `unavailable`) is `internal_error`; any other refusal `bad_request`."""
    if exc.status >= 500:
        return ChannelError(ErrorCode.INTERNAL_ERROR, exc.message)
    return ChannelError(_CODES.get(exc.code, ErrorCode.BAD_REQUEST), exc.message)


# A ride's channel is readable by anyone while the ride exists: one indexed lookup, no ORM
# object (a resume storm runs this rule once per reconnecting client).
_RIDE_EXISTS = select(Ride.id).where(Ride.id == bindparam("id"))


def register(
    registry: ChannelRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    read_sessionmaker: async_sessionmaker[AsyncSession],
    write_limit: WriteLimit | None = None,
) -> None:
    async def ride_rule(user_id: int, params: Params) -> Access:
        async with read_sessionmaker() as session:
            found = (await session.execute(_RIDE_EXISTS, {"id": int(params["id"])})).first()
        return Access.ALLOW if found is not None else Access.NOT_FOUND

    async def chat_rule(user_id: int, params: Params) -> Access:
        async with read_sessionmaker() as session:
            ride = await session.get(Ride, int(params["id"]))
            if ride is None:
                return Access.NOT_FOUND
            member = await chat.is_member(session, ride, user_id)
        return Access.ALLOW if member else Access.FORBIDDEN

    async def on_send(
        user_id: int, channel: ResolvedChannel, body: str, client_id: str | None
    ) -> dict[str, Any]:
        if write_limit is not None and await write_limit.hit(user_id) is not None:
            # The same per-user budget as POST /rides/{id}/messages; the socket stays open.
            raise ChannelError(
                ErrorCode.RATE_LIMITED,
                f"At most {write_limit.per_minute} new objects per minute; slow down",
            )
        async with sessionmaker() as session:
            try:
                view = await chat.post(session, user_id, int(channel.params["id"]), body, client_id)
            except AppError as exc:
                raise socket_error(exc) from exc
            await session.commit()
        return view

    async def anyone(user_id: int, params: Params) -> Access:
        return Access.ALLOW

    registry.register("ride:{id}", ride_rule)
    registry.register("ride:{id}:chat", chat_rule, on_send=on_send, typing=True, presence=True)

    async def admins(user_id: int, params: Params) -> Access:
        async with read_sessionmaker() as session:
            is_admin = await session.scalar(select(User.is_admin).where(User.id == user_id))
        return Access.ALLOW if is_admin else Access.FORBIDDEN

    registry.register("rides", anyone, durable=False)
    registry.register(channel_names.STATS, admins, durable=False)  # server/stats/feed.py
