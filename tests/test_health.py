from __future__ import annotations

from collections.abc import Callable

import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.config import Settings
from tests import services


async def _get(settings: Settings, path: str) -> httpx.Response:
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
            return await client.get(path)


async def test_healthz_and_readyz_ok(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "dependencies": {
            "database": {"status": "ok"},
            "broker": {"status": "ok", "kind": "memory"},
        },
    }


async def test_readyz_with_redis(settings_factory: Callable[..., Settings]) -> None:
    r = await _get(settings_factory(redis_url=services.REDIS_URL), "/readyz")
    assert r.status_code == 200
    assert r.json()["dependencies"]["broker"] == {"status": "ok", "kind": "redis"}


async def test_readyz_degraded_when_redis_unreachable(
    settings_factory: Callable[..., Settings],
) -> None:
    r = await _get(settings_factory(redis_url="redis://127.0.0.1:1/0"), "/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["dependencies"]["broker"]["status"] == "degraded"
    assert body["dependencies"]["database"] == {"status": "ok"}


async def test_readyz_503_when_database_unreachable(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(database_url="postgresql://postgres@127.0.0.1:1/none")
    r = await _get(settings, "/readyz")
    assert r.status_code == 503
    assert r.json()["dependencies"]["database"]["status"] == "unavailable"
    assert (await _get(settings, "/healthz")).status_code == 200


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/auth/token" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_cors_for_allowed_browser_origins(settings_factory: Callable[..., Settings]) -> None:
    app = create_app(settings_factory(allowed_origins=["https://app.kuda.example"]))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
            preflight = {
                "Origin": "https://app.kuda.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            }
            ok = await client.options("/api/v1/rides", headers=preflight)
            assert ok.status_code == 200
            assert ok.headers["access-control-allow-origin"] == "https://app.kuda.example"
            assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
            evil = await client.options(
                "/api/v1/rides", headers={**preflight, "Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in evil.headers
            plain = await client.get("/healthz", headers={"Origin": "https://app.kuda.example"})
            assert plain.headers["access-control-allow-origin"] == "https://app.kuda.example"
            assert "x-request-id" in plain.headers["access-control-expose-headers"].lower()
