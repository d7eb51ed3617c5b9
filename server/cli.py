"""`kuda` command line: serve, migrate."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from pydantic import ValidationError

from server import migrate
from server.config import ConfigError, Settings, embedded_jwt_secret
from server.embedded import EmbeddedPostgres

log = logging.getLogger("kuda.cli")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"kuda: invalid configuration:\n{exc}") from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        args.handler(settings, args)
    except ConfigError as exc:
        raise SystemExit(f"kuda: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kuda", description="Kuda realtime carpooling backend")
    sub = parser.add_subparsers(required=True, metavar="command")
    serve = sub.add_parser(
        "serve", help="run the server (embedded PostgreSQL without DATABASE_URL)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* headers")
    serve.set_defaults(handler=_serve)
    mig = sub.add_parser("migrate", help="apply migrations to DATABASE_URL (idempotent)")
    mig.add_argument("--revision", default="head")
    mig.set_defaults(handler=_migrate)
    return parser


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    if settings.database_url is None:
        raise ConfigError("`kuda migrate` needs DATABASE_URL (the embedded server migrates itself)")
    migrate.upgrade(settings.database_url, args.revision)
    print(f"kuda: database at revision {args.revision}")


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1 and not settings.redis_url:
        raise ConfigError(
            "--workers > 1 needs REDIS_URL: each worker is a separate process, and without Redis "
            "an event published on one worker never reaches sockets held by another."
        )
    embedded = EmbeddedPostgres(settings.data_dir) if settings.embedded else None
    # uvicorn shuts down on SIGTERM/SIGINT, then re-raises the signal with the previous
    # handler restored: make that handler unwind through `finally` so PostgreSQL stops too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if embedded is not None:
            _prepare_embedded(settings, embedded)
        else:
            settings.signing_key()
        _run_uvicorn(args, settings)
    except KeyboardInterrupt:
        pass  # a clean stop: uvicorn has already drained
    finally:
        if embedded is not None:
            embedded.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _prepare_embedded(settings: Settings, embedded: EmbeddedPostgres) -> None:
    url = embedded.start()
    os.environ["DATABASE_URL"] = url
    if settings.jwt_secret is None:
        os.environ["JWT_SECRET"] = embedded_jwt_secret(settings.data_dir)
    migrate.upgrade(url)
    log.info("embedded PostgreSQL ready, data in %s", embedded.pgdata)


def _run_uvicorn(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    base = f"http://{_display_host(args.host)}:{args.port}"
    print(f"kuda: API docs at {base}/docs (OpenAPI at {base}/openapi.json)", file=sys.stderr)
    print(f"kuda: WebSocket at ws://{_display_host(args.host)}:{args.port}/ws", file=sys.stderr)
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        proxy_headers=args.proxy_headers,
        ws="channels.transport:KudaWebSocketProtocol"
        if settings.ws_raw_writer
        else "websockets-sansio",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
