"""Liveness and readiness. Readiness names each dependency."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db import ping

router = APIRouter(tags=["operations"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the database answers and the ended-sessions mirror is fresh (503 otherwise, and
    while draining after SIGTERM); the broker and the read replica (DATABASE_READ_URL) may be
    `degraded` meanwhile."""
    state = request.app.state
    drain = getattr(state, "drain", None)
    if drain is not None and drain.draining:
        # Stopping: load balancers must route elsewhere (sockets are being closed with 1012).
        return JSONResponse({"status": "draining"}, status_code=503)
    database = await _check_database(state)
    if database["status"] == "ok":
        database = await _check_sessions(state)
    broker = await _check_broker(state)
    dependencies = {"database": database, "broker": broker}
    replica = getattr(state, "replica_engine", None)
    if replica is not None:  # DATABASE_READ_URL: down is degraded (the primary reads instead)
        dependencies["read_replica"] = await _check_replica(replica)
    ready = database["status"] == "ok"
    healthy = all(d["status"] == "ok" for d in dependencies.values())
    body: dict[str, Any] = {
        "status": ("ok" if healthy else "degraded") if ready else "unavailable",
        "dependencies": dependencies,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _check_database(state: Any) -> dict[str, str]:
    try:
        await asyncio.wait_for(ping(state.engine), CHECK_TIMEOUT_S)
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        return {"status": "unavailable", "error": type(exc).__name__}
    return {"status": "ok"}


async def _check_sessions(state: Any) -> dict[str, str]:
    """Signed-in requests are answered only while the ended-sessions mirror is fresh (D26): an
    instance whose mirror went stale while PostgreSQL was away is not ready until a poll
    succeeds. Readiness polls once itself rather than wait for the next periodic one, so the
    first requests a balancer sends once the database is back are answered."""
    sessions = state.auth.sessions
    if sessions.fresh:
        return {"status": "ok"}
    try:
        await asyncio.wait_for(sessions.sync(), CHECK_TIMEOUT_S)
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        return {"status": "unavailable", "error": f"ended sessions: {type(exc).__name__}"}
    return {"status": "ok"}


async def _check_replica(engine: AsyncEngine) -> dict[str, str]:
    try:
        await asyncio.wait_for(ping(engine), CHECK_TIMEOUT_S)
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        return {"status": "degraded", "error": type(exc).__name__}
    return {"status": "ok"}


async def _check_broker(state: Any) -> dict[str, str]:
    broker = state.realtime.broker
    if broker.kind == "memory":
        return {"status": "ok", "kind": "memory"}
    if not broker.healthy:
        return {"status": "degraded", "kind": broker.kind, "error": "disconnected"}
    try:
        await asyncio.wait_for(broker.ping(), CHECK_TIMEOUT_S)
    except (TimeoutError, RedisError, OSError) as exc:
        return {"status": "degraded", "kind": broker.kind, "error": type(exc).__name__}
    return {"status": "ok", "kind": broker.kind}
