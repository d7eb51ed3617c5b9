"""Credentials never reach the logs: uvicorn writes each request's path with its query string
(access log, and the WebSocket handshake lines), and a client may put a token there even
though Kuda refuses it (`/ws?token=...`). This filter blanks the values of credential
parameters in every record of those loggers before any handler formats it."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = ("access_token", "refresh_token", "token", "ticket", "password")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"']*")
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    return _QUERY_SECRET.sub(r"\1" + REDACTED, text) if "=" in text else text


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


def install() -> None:
    """Idempotent: one filter per logger."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
