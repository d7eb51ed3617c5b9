"""Which failures mean "the database is unavailable right now" (retry later), as opposed to a bug.

REST answers them 503 `unavailable` and sockets an `internal_error` frame (the socket stays
open); both are transient by definition: a stopped, restarting, stalled or overloaded PostgreSQL,
a connection that died, a pool with no free connection, a statement cancelled by its timeout.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATE classes and codes (PostgreSQL appendix A) that say "not now" rather than "not so".
_TRANSIENT_CLASSES = ("08", "53")  # connection exception; insufficient resources
_TRANSIENT_CODES = frozenset(
    {
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down, recovering)
        "55P03",  # lock_not_available
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)


# What asyncpg says when a connection is no longer usable without a SQLSTATE of its own: the
# server's FATAL arrived but not yet the socket's close (the protocol waits for a ReadyForQuery
# that never comes), or the socket is already gone.
_BROKEN_MESSAGES = ("another operation is in progress", "connection is closed")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (the driver wraps the server's error two or three deep)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 8 and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def sqlstates(exc: BaseException) -> list[str]:
    """The PostgreSQL error codes found along the exception's causes."""
    codes = [getattr(e, "sqlstate", None) for e in _chain(exc)]
    return [c for c in codes if isinstance(c, str)]


def broken_connection(exc: BaseException) -> bool:
    """The connection this failed on cannot be used again: the server closed or shut it down,
    the network failed, or it did not answer in time (the pool must drop it)."""
    for e in _chain(exc):
        if isinstance(e, TimeoutError | OSError):  # OSError: refused, reset, unreachable
            return True
        if type(e).__name__ in ("InterfaceError", "InternalClientError") and any(
            m in str(e) for m in _BROKEN_MESSAGES
        ):
            return True
    return any(c[:2] == "08" or c in ("57P01", "57P02", "57P03") for c in sqlstates(exc))


def transient(exc: BaseException) -> bool:
    """True for failures that a retry a little later is expected to cure."""
    if isinstance(exc, PoolTimeout) or broken_connection(exc):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return any(c in _TRANSIENT_CODES or c[:2] in _TRANSIENT_CLASSES for c in sqlstates(exc))


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Background work that failed: one line while the database is unavailable (it retries by
    itself), a traceback for anything else."""
    if transient(exc):
        logger.warning("%s: database unavailable (%s: %s)", what, type(exc).__name__, exc)
    else:
        logger.error("%s", what, exc_info=exc)
