"""What operators see: JSON logs that name the request, user and socket; HTTP metrics beside the
socket metrics; `/metrics` off the public port or behind a token; optional OpenTelemetry spans;
and the Grafana dashboard and Prometheus scrape config in deploy/, checked against /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import Settings
from tests import services
from tests.cluster import Cluster
from tests.domain.conftest import make_ride
from tests.helpers import signup
from tests.live import LiveServer, ws_connect
from tests.procs import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> {sample name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


@pytest.fixture
async def app_with(settings_factory: Callable[..., Settings]) -> AsyncIterator[Any]:
    apps: list[LifespanManager] = []

    async def start(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
        app = create_app(settings_factory(**overrides))
        manager = LifespanManager(app)
        await manager.__aenter__()
        apps.append(manager)
        transport = httpx.ASGITransport(app=app)
        return app, httpx.AsyncClient(transport=transport, base_url="http://kuda.test")

    yield start
    for manager in reversed(apps):
        await manager.__aexit__(None, None, None)


# Logs -------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_json_logs_name_the_request_user_and_socket(
    cluster_factory: Callable[..., Cluster], redis: Any
) -> None:
    cluster = cluster_factory(services.REDIS_URL)
    base = cluster.env
    cluster.env = lambda: {**base(), "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}  # type: ignore[method-assign]
    server = await cluster.process()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        account = await signup(http)
        me = await http.get(
            "/api/v1/users/me", headers={**account.headers, "X-Request-ID": "trace-me-42"}
        )
        assert me.status_code == 200
        async with ws_connect(f"ws://127.0.0.1:{server.port}/ws", account.access_token) as ws:
            await ws.expect("welcome")
    assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's own lines too
    access = [r for r in records if r.get("request_id") == "trace-me-42"]
    assert access, "the access line of the request carries its id"
    line = access[-1]
    assert line["logger"] == "uvicorn.access" and line["path"] == "/api/v1/users/me"
    assert line["status"] == 200 and line["method"] == "GET"
    assert line["user_id"] == account.id
    socket_lines = [r for r in records if r.get("connection_id")]
    assert {r["msg"] for r in socket_lines} >= {"socket open", "socket closed"}
    assert all(r["user_id"] == account.id for r in socket_lines)


# Metrics ----------------------------------------------------------------------------------------


async def test_http_metrics_per_route_template_status_pool_and_cache(
    app_with: Any, redis: Any, redis_prefix: str
) -> None:
    _, client = await app_with(redis_url=services.REDIS_URL, redis_prefix=redis_prefix)
    async with client:
        driver = await signup(client)
        ride = await make_ride(client, driver)
        for _ in range(3):
            r = await client.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)
            assert r.status_code == 200
        assert (await client.get("/api/v1/rides/999999", headers=driver.headers)).status_code == 404
        assert (await client.get("/no/such/path")).status_code == 404
        text = (await client.get("/metrics")).text
    found = samples(text)
    requests = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in found["kuda_http_requests_total"]
    }
    assert requests[("GET", "/api/v1/rides/{ride_id}", "200")] == 3
    assert requests[("GET", "/api/v1/rides/{ride_id}", "404")] == 1
    assert requests[("GET", "unmatched", "404")] == 1  # raw paths never become labels
    assert not any(f"/rides/{ride['id']}" in route for _, route, _ in requests)
    counts = {
        (labels["method"], labels["route"]): value
        for labels, value in found["kuda_http_request_duration_seconds_count"]
    }
    assert counts[("GET", "/api/v1/rides/{ride_id}")] == 4
    infinite = [
        v
        for labels, v in found["kuda_http_request_duration_seconds_bucket"]
        if labels["route"] == "/api/v1/rides/{ride_id}" and labels["le"] == "+Inf"
    ]
    assert infinite == [4]
    pool = {labels["pool"]: v for labels, v in found["kuda_db_pool_size"]}
    assert pool["primary"] >= 1
    assert found["kuda_db_pool_checked_out"][0][1] >= 0
    assert found["kuda_cache_hits_total"][0][1] >= 2  # the second and third reads
    assert found["kuda_cache_misses_total"][0][1] >= 1
    assert found["kuda_http_requests_in_flight"][0][1] == 1  # the scrape itself
    assert "kuda_ws_open_sockets" in found  # beside the realtime metrics


async def test_metrics_token_protects_the_public_endpoint(app_with: Any) -> None:
    _, client = await app_with(metrics_token="scrape-" + "s" * 30)
    async with client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-" + "s" * 30})
        assert ok.status_code == 200 and "kuda_http_requests_total" in ok.text


async def test_metrics_port_serves_metrics_off_the_api_port(app_with: Any) -> None:
    port = free_port()
    _, client = await app_with(metrics_port=port)
    async with client:
        assert (await client.get("/healthz")).status_code == 200
        hidden = await client.get("/metrics")
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    async with httpx.AsyncClient() as plain:
        r = await plain.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    assert ("GET", "/healthz") in {
        (labels["method"], labels["route"])
        for labels, _ in samples(r.text)["kuda_http_requests_total"]
    }


def test_nginx_never_forwards_metrics() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "location = /metrics" in conf
    block = conf.split("location = /metrics", 1)[1].split("}", 1)[0]
    assert "return 404" in block and "proxy_pass" not in block


# Tracing ----------------------------------------------------------------------------------------

_SPANS = InMemorySpanExporter()


@pytest.fixture(scope="session")
def tracer_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_SPANS))
    trace.set_tracer_provider(provider)  # once per process (OpenTelemetry refuses a second)
    return provider


async def test_otel_tracing_is_off_by_default_and_spans_requests_when_on(
    app_with: Any, tracer_provider: TracerProvider
) -> None:
    _SPANS.clear()
    _, plain = await app_with()
    async with plain:
        assert (await plain.get("/api/v1/rides")).status_code in (200, 401)
    assert _SPANS.get_finished_spans() == ()  # off: no spans at all

    _, traced = await app_with(otel_tracing=True)
    async with traced:
        driver = await signup(traced)
        assert (await traced.get("/api/v1/users/me", headers=driver.headers)).status_code == 200
        assert (await traced.get("/healthz")).status_code == 200
    routes = [span.attributes.get("http.route") for span in _SPANS.get_finished_spans()]
    assert "/api/v1/users/me" in routes
    assert "/healthz" not in routes  # probes and scrapes are not traced


# Dashboard and scrape config --------------------------------------------------------------------


@pytest.mark.slow
async def test_grafana_dashboard_panels_query_metrics_that_exist(
    live_factory: Callable[..., Any], redis: Any, redis_prefix: str
) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "kuda-dashboard.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 8
    rules = yaml.safe_load((DEPLOY / "prometheus" / "kuda-rules.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    live: LiveServer = await live_factory(redis_url=services.REDIS_URL, redis_prefix=redis_prefix)
    async with httpx.AsyncClient(base_url=live.http) as http:
        driver = await signup(http)
        ride = await make_ride(http, driver)
        await http.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)
        async with ws_connect(live.ws_url, driver.access_token) as ws:
            await ws.expect("welcome")
            await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}"})
            await http.patch(
                f"/api/v1/rides/{ride['id']}", json={"notes": "x"}, headers=driver.headers
            )
            await ws.expect("event")
            exposed = set(samples((await http.get("/metrics")).text))
    referenced = {name for expr in exprs for name in _metric_names(expr)}
    assert referenced, exprs
    missing = referenced - exposed
    assert not missing, f"dashboard queries metrics /metrics does not expose: {missing}"


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(kuda_[a-z_]+)", expr))


def test_prometheus_scrape_config_targets_the_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    kuda = jobs["kuda"]
    assert kuda.get("metrics_path", "/metrics") == "/metrics"
    text = json.dumps(kuda)
    assert "9100" in text or "metrics" in text  # the METRICS_PORT the chart sets
    assert config["rule_files"], "alerting rules are loaded"
    rules = yaml.safe_load((DEPLOY / "prometheus" / "kuda-rules.yml").read_text())
    assert all(rule["expr"] for group in rules["groups"] for rule in group["rules"])
