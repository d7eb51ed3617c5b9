"""`kuda serve` freezes its startup heap out of the garbage collector (server/heap.py, D38);
an app built in a test process does not (it would never be collected)."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx
import pytest

from server import heap
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET


def test_an_app_outside_kuda_serve_freezes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heap.ENV, raising=False)
    before = gc.get_freeze_count()
    assert heap.freeze_startup_heap() == 0
    assert gc.get_freeze_count() == before


@pytest.mark.slow
def test_kuda_serve_freezes_its_startup_heap_and_serves(database_url: str, tmp_path: Path) -> None:
    env = kuda_env(DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET, LOG_LEVEL="info")
    server = Server(env, tmp_path / "serve.log")
    try:
        server.wait_ready()
        assert httpx.get(server.base_url + "/api/v1/rides", timeout=5).status_code == 401
        assert "startup heap frozen out of the garbage collector" in server.log()
    finally:
        server.stop()
