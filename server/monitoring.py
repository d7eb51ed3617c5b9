"""Where metrics and traces go.

- `/metrics` (Prometheus text) serves the realtime and HTTP metrics of this instance. With
  `METRICS_PORT` it is served only on that port, by prometheus_client's own HTTP server (the API
  port answers 404), so it can stay inside the cluster network; with `METRICS_TOKEN`, the API
  port's `/metrics` wants `Authorization: Bearer <token>`. deploy/nginx.conf never forwards it.
- `OTEL_TRACING=true` turns on FastAPI's native OpenTelemetry request spans (the `otel` extra
  installs the SDK and the OTLP exporter; `OTEL_EXPORTER_OTLP_ENDPOINT` says where to send).
  Off by default: FastAPI is then built with every telemetry feature disabled (D11).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import start_http_server

from server.config import Settings
from server.errors import NotFound, Unauthorized

log = logging.getLogger("kuda.monitoring")

NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
UNTRACED = frozenset({"/metrics", "/healthz", "/readyz"})

router = APIRouter(tags=["operations"])


def telemetry(settings: Settings) -> TelemetryConfig:
    if not settings.otel_tracing:
        return NO_TELEMETRY
    return {
        "tracing": True,
        "metrics": False,  # Prometheus has them
        "logs": False,
        "operation_spans": False,
        "auto_configure": True,  # OTLP export from the OTEL_EXPORTER_OTLP_* variables
        "exclude": _untraced,
    }


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics_port is not None:
        raise NotFound(f"/metrics is served on port {settings.metrics_port}")
    if settings.metrics_token is not None:
        expected = "Bearer " + settings.metrics_token.get_secret_value()
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("/metrics needs the metrics bearer token")
    registry: CollectorRegistry = request.app.state.realtime.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsListener:
    """prometheus_client's HTTP server on `METRICS_PORT` (a daemon thread), for this process's
    registry. One process per port: `kuda serve --workers N` refuses `METRICS_PORT`."""

    def __init__(self, port: int, registry: CollectorRegistry, host: str = "0.0.0.0") -> None:
        server, thread = start_http_server(port, addr=host, registry=registry)
        self._server, self._thread = server, thread
        log.info("metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(timeout=5)
