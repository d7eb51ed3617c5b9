"""Real `kuda` processes for tests that cross a process boundary."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KUDA = [sys.executable, "-m", "server"]
REPO = Path(__file__).resolve().parent.parent


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free port below Linux's ephemeral range, so a restarted server can bind it again
    (`low`..`high`: a range of its own)."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def kuda_env(**env: str) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "JWT_"))
    }
    base.update(env)
    return base


def run_kuda(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUDA, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


class Server:
    """`kuda serve` in a subprocess; output goes to a log file for diagnosis."""

    def __init__(
        self, env: dict[str, str], log_path: Path, *extra: str, port: int | None = None
    ) -> None:
        self.port = port or free_port()  # a restarted instance may take its old port again
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        cmd = [*KUDA, "serve", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")
