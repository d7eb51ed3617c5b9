"""Types and errors shared by the client's modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

Frame = dict[str, Any]
"""A JSON frame as the server sends it (`{"type": "event", ...}`)."""

TokenFn = Callable[[], Awaitable[str] | str]
"""Returns a valid access token; called for each connection and before the token expires."""

State = Literal["connecting", "connected", "disconnected", "closed", "unauthorized"]
"""Connection states. `closed` (after `close()` or a 1000 close) and `unauthorized` (`get_token`
failed, or the handshake kept refusing fresh tokens) are terminal."""

TERMINAL: frozenset[State] = frozenset({"closed", "unauthorized"})


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of the connection state machine, with the close code and reason that
    caused it (None when there was no close frame)."""

    state: State
    previous: State
    code: int | None = None
    reason: str = ""


class KudaError(Exception):
    """Base class of the client's errors."""


class ServerError(KudaError):
    """The server refused an op (`{"type": "error"}`), or a subscription was revoked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Unauthorized(KudaError):
    """`get_token` failed, or the server kept refusing fresh tokens: the client stopped."""


class ClientClosed(KudaError):
    """The client was closed while the operation waited."""


class Disconnected(KudaError):
    """The socket closed before the op's reply arrived (the client retries where safe)."""
