"""Logging setup: plain text (the default) or one JSON object per line (`LOG_FORMAT=json`).

In JSON every line carries `ts`, `level`, `logger`, `msg`, and the request id, user id and
connection id of the request or socket it was logged for (`channels.logctx`); uvicorn's own
lines go through the same handler, its access lines with `method`, `path`, `status` and `client`
as fields. `kuda serve` hands the same configuration to uvicorn, so worker processes log alike.
"""

from __future__ import annotations

import logging
import logging.config
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

from server.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_CONTEXT_KEYS = ("request_id", "user_id", "connection_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        context: dict[str, Any] = getattr(record, "kuda", None) or {}
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(_access_fields(record.args))
        else:
            line["msg"] = record.getMessage()
        for key in _CONTEXT_KEYS:
            value = context.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return orjson.dumps(line, default=str).decode()


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    """uvicorn's access record: (client, method, path, http version, status)."""
    if len(args) != 5:
        return {"msg": " ".join(map(str, args))}
    client, method, path, version, status = args
    return {
        "msg": f"{method} {path} {status}",
        "method": method,
        "path": path,
        "status": status,
        "http": version,
        "client": client,
    }


def dict_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` for this process and for uvicorn (`log_config`)."""
    level = settings.log_level.upper()
    json = settings.log_format == "json"
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "json" if json else "text",
        "filters": ["context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "channels.logctx.ContextFilter"}},
        "formatters": {
            "json": {"()": "server.logs.JsonFormatter"},
            "text": {"format": TEXT_FORMAT},
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": TEXT_FORMAT},
        },
        "handlers": {
            "default": handler,
            "access": {**handler, "formatter": "json" if json else "access"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure(settings: Settings) -> None:
    logging.config.dictConfig(dict_config(settings))
