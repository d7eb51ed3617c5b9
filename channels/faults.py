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


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code behind a driver error, if any."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def transient(exc: BaseException) -> bool:
    """True for failures that a retry a little later is expected to cure."""
    if isinstance(exc, PoolTimeout | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError):  # refused, reset, unreachable while connecting
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = sqlstate(exc)
        return code is not None and (code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES)
    return False


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Background work that failed: one line while the database is unavailable (it retries by
    itself), a traceback for anything else."""
    if transient(exc):
        logger.warning("%s: database unavailable (%s: %s)", what, type(exc).__name__, exc)
    else:
        logger.error("%s", what, exc_info=exc)
