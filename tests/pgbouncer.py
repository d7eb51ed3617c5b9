"""A test-owned PgBouncer (the Debian `pgbouncer` package; .ci/run installs it) in transaction
mode, in front of one database of a PostgreSQL server, with a deliberately small server pool so
that clients really share server connections."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.pg_server import _run_user


class PgBouncer:
    def __init__(self, host: str, port: int, database: str, listen_port: int, pool_size: int):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer, as .ci/run)")
        self.binary = binary
        self.port = listen_port
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="kuda-pgbouncer-"))
        self.user = _run_user()
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            f"""[databases]
{database} = host={host} port={port} dbname={database} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root}/users.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
server_reset_query = DISCARD ALL
server_reset_query_always = 1
logfile = {self.root}/pgbouncer.log
pidfile = {self.root}/pgbouncer.pid
"""
        )
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PgBouncer:
        args = [self.binary, *(["-u", self.user] if self.user else []), "pgbouncer.ini"]
        self.proc = subprocess.Popen(
            args, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"pgbouncer did not open port {self.port}:\n{self.log()}")

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
