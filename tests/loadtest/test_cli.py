"""`kuda loadtest` end to end against real `kuda serve` processes, PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
