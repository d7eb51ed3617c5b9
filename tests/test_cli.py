"""`kuda` as users run it: refusals with clear messages, migrate, and the embedded default."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import services
from tests.conftest import JWT_SECRET
from tests.helpers import PASSWORD
from tests.procs import KUDA, REPO, Server, free_port, kuda_env, run_kuda


def test_external_database_without_jwt_secret_refuses_to_start(database_url: str) -> None:
    r = run_kuda("serve", env=kuda_env(DATABASE_URL=database_url), timeout=30)
    assert r.returncode != 0
    assert "JWT_SECRET is not set" in r.stderr


def test_placeholder_jwt_secret_refused(database_url: str) -> None:
    r = run_kuda("serve", env=kuda_env(DATABASE_URL=database_url, JWT_SECRET="changeme"))
    assert r.returncode != 0 and "placeholder" in r.stderr


def test_workers_without_redis_refused(database_url: str) -> None:
    env = kuda_env(DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET)
    r = run_kuda("serve", "--workers", "2", env=env)
    assert r.returncode != 0
    assert "--workers > 1 needs REDIS_URL" in r.stderr


def test_invalid_setting_is_reported(tmp_path: Path) -> None:
    r = run_kuda("serve", env=kuda_env(DATA_DIR=str(tmp_path), ACCESS_TOKEN_TTL_S="soon"))
    assert r.returncode != 0 and "access_token_ttl_s" in r.stderr


async def test_migrate_is_idempotent_and_downgrade_base_works() -> None:
    name, url = await services.create_database("kuda_migrate")
    try:
        for _ in range(2):
            r = await asyncio.to_thread(run_kuda, "migrate", env=kuda_env(DATABASE_URL=url))
            assert r.returncode == 0, r.stderr
        tables = await _tables(url)
        assert {"users", "refresh_tokens", "alembic_version"} <= tables
        from server import migrate

        await asyncio.to_thread(migrate.downgrade, url, "base")
        assert await _tables(url) == {"alembic_version"}
        await asyncio.to_thread(migrate.upgrade, url)
        assert "users" in await _tables(url)
    finally:
        await services.drop_database(name)


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """DATA_DIR for an embedded server; never leaves a PostgreSQL behind, even on failure."""
    path = tmp_path / "data"
    yield path
    pid_file = path / "pg" / "postmaster.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


@pytest.mark.slow
def test_embedded_default_serves_persists_and_stops_cleanly(tmp_path: Path, data_dir: Path) -> None:
    env = kuda_env(DATA_DIR=str(data_dir))
    first = Server(env, tmp_path / "first.log")
    try:
        first.wait_ready()
        assert "API docs at http://127.0.0.1:" in first.log()
        assert httpx.get(first.base_url + "/docs").status_code == 200
        body = {"email": "embedded@example.com", "password": PASSWORD, "display_name": "E"}
        assert httpx.post(first.base_url + "/api/v1/auth/register", json=body).status_code == 201
        token = _login(first.base_url)
    finally:
        assert first.stop(signal.SIGTERM) == 0, first.log()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"
    assert (data_dir / "jwt_secret").stat().st_mode & 0o077 == 0

    second = Server(env, tmp_path / "second.log")
    try:
        second.wait_ready()
        me = httpx.get(
            second.base_url + "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.status_code == 200, "data or signing key not reused"
        assert me.json()["email"] == "embedded@example.com"
    finally:
        assert second.stop(signal.SIGINT) == 0, second.log()
    assert not (data_dir / "pg" / "postmaster.pid").exists()


def _login(base_url: str) -> str:
    r = httpx.post(
        base_url + "/api/v1/auth/token",
        data={"username": "embedded@example.com", "password": PASSWORD},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def test_create_admin_and_seed(
    database_url: str, db: str, db_conn: asyncpg.Connection
) -> None:
    env = kuda_env(DATABASE_URL=db, KUDA_ADMIN_PASSWORD="admin-password-1")
    r = await asyncio.to_thread(run_kuda, "create-admin", "--email", "Boss@Example.com", env=env)
    assert r.returncode == 0, r.stderr
    assert "now an administrator" in r.stdout
    again = await asyncio.to_thread(
        run_kuda, "create-admin", "--email", "boss@example.com", env=env
    )
    assert "already an administrator" in again.stdout
    assert await db_conn.fetchval("SELECT is_admin FROM users WHERE email = 'boss@example.com'")
    seeded = await asyncio.to_thread(run_kuda, "seed", "--users", "12", "--rides", "60", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 12 users, 60 rides" in seeded.stdout
    places = {r["origin"] for r in await db_conn.fetch("SELECT origin FROM rides")}
    assert places <= {"Innopolis", "Kazan", "Kazan Airport", "Kazan Railway Station"}
    overbooked = await db_conn.fetchval(
        "SELECT count(*) FROM rides r WHERE r.seats_total - r.seats_available <> "
        "(SELECT coalesce(sum(seats), 0) FROM bookings b WHERE b.ride_id = r.id "
        "AND b.status = 'confirmed')"
    )
    assert overbooked == 0
    future = await db_conn.fetchval(
        "SELECT count(*) FROM rides WHERE status = 'scheduled' AND departure_at > now()"
    )
    assert future > 20


@pytest.mark.slow
async def test_production_mode_with_two_workers_serves_and_stops(
    db: str, tmp_path: Path, redis: Any, redis_prefix: str
) -> None:
    env = kuda_env(
        DATABASE_URL=db,
        REDIS_URL=services.REDIS_URL,
        REDIS_PREFIX=redis_prefix,
        JWT_SECRET=JWT_SECRET,
    )
    server = Server(env, tmp_path / "workers.log", "--workers", "2")
    try:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for _ in range(4):  # whichever worker answers, it is ready on Redis
                ready = (await http.get("/readyz")).json()
                assert ready["dependencies"]["broker"] == {"status": "ok", "kind": "redis"}
    finally:
        assert await asyncio.to_thread(server.stop) == 0, server.log()
    assert "Traceback" not in server.log()


def test_serve_takes_the_hard_open_file_limit_and_says_so(db: str, tmp_path: Path) -> None:
    """Each socket is a file: a soft limit of 256 would refuse the 257th socket."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip("the hard open-file limit is too low to lower the soft one below it")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    port = free_port()
    log_path = tmp_path / "serve.log"
    env = kuda_env(DATABASE_URL=db, JWT_SECRET=JWT_SECRET)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*KUDA, "serve", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=low_soft_limit,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3] == str(hard), line
        assert f"open-file limit raised from 256 to {hard}" in log_path.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_listens_with_the_configured_backlog(db: str, tmp_path: Path) -> None:
    """A restart sends thousands of clients to the other instances at once: their connects wait
    in the listen queue, which `LISTEN_BACKLOG` sizes (uvicorn's own 2,048 overflowed, D41)."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    backlog = min(1234, somaxconn)  # the kernel caps it there
    env = kuda_env(DATABASE_URL=db, JWT_SECRET=JWT_SECRET, LISTEN_BACKLOG=str(backlog))
    server = Server(env, tmp_path / "backlog.log")
    try:
        server.wait_ready()
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout
        # For a listening socket, ss shows the backlog as its Send-Q (State, Recv-Q, Send-Q, ...).
        assert [line.split()[2] for line in out.splitlines()] == [str(backlog)], out
    finally:
        assert server.stop() == 0, server.log()
