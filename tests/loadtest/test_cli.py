"""`kuda loadtest` end to end against real `kuda serve` processes, PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kuda.loadtest.procstat import cpu_seconds
from server import cli
from tests import services
from tests.procs import REPO, kuda_env


def test_missing_extra_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picows", None)  # import picows -> ImportError
    with pytest.raises(SystemExit) as exc:
        cli.main(["loadtest", "hot"])
    assert "pip install 'kuda[loadtest]'" in str(exc.value)


KUDA_LOADTEST = [sys.executable, "-m", "server", "loadtest"]
COMMON = ["--spawn", "2", "--fresh-db", "--no-progress", "--procs", "2", "--users", "4"]


def loadtest(tmp_path: Path, *args: str) -> tuple[int, dict[str, object], str]:
    out = tmp_path / "result.json"
    env = kuda_env(DATABASE_URL=services.ADMIN_URL, REDIS_URL=services.REDIS_URL)
    proc = subprocess.run(
        [*KUDA_LOADTEST, *args, *COMMON, "--json", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, result, proc.stdout + proc.stderr


@pytest.mark.slow
def test_hot_delivers_every_event_to_every_socket(tmp_path: Path) -> None:
    code, result, output = loadtest(
        tmp_path, "hot", "--sockets", "30", "--rate", "20", "--duration", "2"
    )
    assert code == 0, output
    r = result["results"]
    assert isinstance(r, dict)
    assert r["connect_failed"] == 0 and r["subscribe_failed"] == 0
    assert r["published"] == 40 and r["publish_failed"] == 0
    assert r["delivered"] == 30 * 40
    assert (r["lost"], r["duplicated"], r["out_of_order"], r["dropped"]) == (0, 0, 0, 0)
    assert r["latency"]["count"] == 30 * 40
    assert "commit-to-socket p50" in output


@pytest.mark.slow
def test_resume_recovers_every_client_after_a_restart(tmp_path: Path) -> None:
    code, result, output = loadtest(tmp_path, "resume", "--sockets", "20", "--missed", "2")
    assert code == 0, output
    r = result["results"]
    assert isinstance(r, dict)
    assert r["disconnected"] == 20
    assert r["recovered"] == 20 and r["unrecovered"] == 0
    assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert r["all_recovered_s"] is not None


def _children(pid: int) -> dict[int, str]:
    """The live processes whose parent is `pid`: {pid: command line}."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pids: list[int], within_s: float) -> list[int]:
    """The pids still alive after waiting up to `within_s` for them to exit."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _wait_quiet(pid: int, within_s: float = 60) -> None:
    """Until the process used no CPU for a whole second (the scenario is holding)."""
    deadline = time.monotonic() + within_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now
    raise AssertionError("kuda loadtest never went quiet")


def _start_idle(
    database_url: str, redis_prefix: str, log: Path
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`kuda loadtest idle --spawn 2` held for a long while; returns once its servers are up
    and its client processes have started (the scenario is running). Its output goes to `log`."""
    env = kuda_env(DATABASE_URL=database_url, REDIS_URL=services.REDIS_URL)
    args = ["idle", "--spawn", "2", "--no-progress", "--procs", "1", "--users", "2"]
    args += ["--sockets", "4", "--duration", "300", "--server-env", f"REDIS_PREFIX={redis_prefix}"]
    with log.open("wb") as out:
        tool = subprocess.Popen(
            [*KUDA_LOADTEST, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = _children(tool.pid)
        servers = [p for p, cmd in children.items() if "server serve" in cmd]
        if len(servers) == 2 and any("kuda.loadtest.worker" in c for c in children.values()):
            return tool, servers
        assert tool.poll() is None, "kuda loadtest exited before its scenario ran"
        time.sleep(0.2)
    tool.kill()
    raise AssertionError("kuda loadtest did not start its servers and clients")


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", [signal.SIGKILL, signal.SIGINT, signal.SIGHUP], ids=["SIGKILL", "SIGINT", "SIGHUP"]
)
def test_spawned_servers_never_outlive_the_tool(
    database_url: str, redis_prefix: str, redis: object, how: signal.Signals, tmp_path: Path
) -> None:
    """However the tool ends (killed outright, interrupted, its terminal gone), the `kuda
    serve` processes it spawned stop too instead of holding their ports and connections."""
    log = tmp_path / "loadtest.log"
    tool, servers = _start_idle(database_url, redis_prefix, log)
    try:
        _wait_quiet(tool.pid)  # in the hold, where a user's Ctrl-C usually lands
        tool.send_signal(how)
        try:
            tool.wait(120)
        except subprocess.TimeoutExpired as exc:
            message = f"still running 120 s after {how.name}:\n{log.read_text()}"
            raise AssertionError(message) from exc
        assert _gone(servers, within_s=60) == []
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
