"""The wire contract's close and error codes, as data (PROTOCOL.md sections 3 and 5)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes. 1xxx are RFC 6455; 44xx are Kuda's application codes."""

    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # binary frames
    POLICY = 1008  # abuse
    TOO_BIG = 1009  # frame over the size limit
    SERVER_ERROR = 1011
    RESTART = 1012  # graceful shutdown: reconnect elsewhere and resume with `since`
    TOKEN_EXPIRED = 4401  # also: the credential's session ended (logout, password change...)
    ACCESS_REVOKED = 4403
    RATE_LIMITED = 4429  # op flood, or too slow to read its events

    @property
    def should_reconnect(self) -> bool:
        """Whether a client should reconnect (with `since`) after this code."""
        return self in {CloseCode.RESTART, CloseCode.SERVER_ERROR, CloseCode.RATE_LIMITED}


class ErrorCode(StrEnum):
    """`code` of `{"type": "error"}` frames; the socket stays open after each."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    VALIDATION_ERROR = "validation_error"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    INTERNAL_ERROR = "internal_error"  # the op failed on the server's side
