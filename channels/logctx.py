"""Who a log line is about: the request id, user id and connection id of the request or socket
being served, carried in a context variable so every line logged while serving it can name them
(`LOG_FORMAT=json` writes them as fields).

Binding is a context variable set per request or socket (about 0.1 us); nothing is paid when
nothing is logged."""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

Fields = dict[str, Any]

_fields: ContextVar[Fields] = ContextVar("kuda_log_fields", default={})  # noqa: B039 - never mutated


def bind(**fields: Any) -> Token[Fields]:
    """Add fields for the rest of the current request, socket or task (`reset` undoes it)."""
    return _fields.set({**_fields.get(), **fields})


def reset(token: Token[Fields]) -> None:
    _fields.reset(token)


def current() -> Fields:
    return _fields.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (as `record.kuda`) when it is emitted, so a
    formatter running later or elsewhere still sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.kuda = _fields.get()
        return True
