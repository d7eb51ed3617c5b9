"""Channel authorization registry: channel templates -> async rules, and per-kind hooks.

The domain registers its channel kinds (`ride:{id}`, `ride:{id}:chat`, `rides`); `user:{id}` is
built in. A name that does not parse is `bad_request`; a rule answers allow, forbidden or
not_found (the object does not exist).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from channels.codes import ErrorCode
from channels.types import JSONObject


class Access(Enum):
    ALLOW = "allow"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"


class ChannelError(Exception):
    """A refusal on a channel operation, rendered as an `error` frame or REST error."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Params = Mapping[str, str]
Rule = Callable[[int, Params], Awaitable[Access]]
"""(user_id, params from the channel name) -> access."""

SendHook = Callable[[int, "ResolvedChannel", str, str | None], Awaitable[JSONObject]]
"""(user_id, channel, body, client_id) -> the stored message; raises ChannelError to refuse.
With a `client_id` the sender already used on this channel, the hook returns the message first
stored under it and stores and publishes nothing (a retried send)."""


@dataclass(frozen=True, slots=True)
class ChannelKind:
    template: str
    pattern: re.Pattern[str]
    rule: Rule
    durable: bool = True
    on_send: SendHook | None = None
    typing: bool = False
    presence: bool = False


@dataclass(frozen=True, slots=True)
class ResolvedChannel:
    name: str
    kind: ChannelKind
    params: Params = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        return self.kind.durable


_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_ID = r"[1-9][0-9]{0,17}"


def compile_template(template: str) -> re.Pattern[str]:
    """`ride:{id}:chat` -> ^ride:(?P<id>[1-9][0-9]{0,17}):chat$ (placeholders are ids)."""
    parts = _PLACEHOLDER.split(template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_ID})" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


class ChannelRegistry:
    def __init__(self) -> None:
        self._kinds: list[ChannelKind] = []

    def register(
        self,
        template: str,
        rule: Rule,
        *,
        durable: bool = True,
        on_send: SendHook | None = None,
        typing: bool = False,
        presence: bool = False,
    ) -> ChannelKind:
        kind = ChannelKind(
            template, compile_template(template), rule, durable, on_send, typing, presence
        )
        self._kinds.append(kind)
        return kind

    def resolve(self, name: str) -> ResolvedChannel:
        for kind in self._kinds:
            match = kind.pattern.fullmatch(name)  # not match(): `$` allows a trailing newline
            if match:
                return ResolvedChannel(name, kind, match.groupdict())
        raise ChannelError(ErrorCode.BAD_REQUEST, f"Unknown channel {name[:200]!r}")

    async def authorize(self, user_id: int, channel: ResolvedChannel) -> None:
        access = await channel.kind.rule(user_id, channel.params)
        if access is Access.NOT_FOUND:
            raise ChannelError(ErrorCode.NOT_FOUND, f"{channel.name} does not exist")
        if access is not Access.ALLOW:
            raise ChannelError(ErrorCode.FORBIDDEN, f"Not allowed to read {channel.name}")


async def own_user_channel(user_id: int, params: Params) -> Access:
    """`user:{id}`: the owner only. Another user's channel is forbidden (never not_found,
    which would reveal which accounts exist)."""
    return Access.ALLOW if int(params["id"]) == user_id else Access.FORBIDDEN
