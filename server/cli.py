"""`kuda` command line: serve, migrate."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import resource
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from pydantic import ValidationError

from server import admin_tasks, heap, logs, migrate
from server.config import ConfigError, Settings, embedded_jwt_secret
from server.embedded import EmbeddedPostgres
from server.seed import DEMO_PASSWORD

log = logging.getLogger("kuda.cli")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.handler is _loadtest:
        _loadtest(args.args)
        return
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"kuda: invalid configuration:\n{exc}") from exc
    logs.configure(settings)
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
    mig.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 0 if the database is at the latest revision, else 1",
    )
    mig.set_defaults(handler=_migrate)
    admin = sub.add_parser("create-admin", help="create an administrator (or promote a user)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--password", help="default: $KUDA_ADMIN_PASSWORD, else prompted")
    admin.set_defaults(handler=_create_admin)
    seed = sub.add_parser("seed", help="load a demo data set (Innopolis, Kazan, airport, station)")
    seed.add_argument("--users", type=int, default=40)
    seed.add_argument("--rides", type=int, default=300)
    seed.add_argument("--days", type=int, default=21)
    seed.add_argument("--random-seed", type=int, default=7)
    seed.set_defaults(handler=_seed)
    load = sub.add_parser(
        "loadtest",
        help="load-test running instances (needs the `loadtest` extra)",
        add_help=False,
        prefix_chars="\0",
    )
    load.add_argument("args", nargs=argparse.REMAINDER)
    load.set_defaults(handler=_loadtest)
    return parser


LOADTEST_MISSING = """\
kuda loadtest needs the `loadtest` extra, which the server does not install:
    pip install 'kuda[loadtest]'
or, from a checkout:
    .venv/bin/pip install -e '.[loadtest]'
(missing: {missing})"""


def _loadtest(argv: list[str]) -> None:
    try:
        import httpx  # noqa: F401
        import picows  # noqa: F401
    except ImportError as exc:
        raise SystemExit(LOADTEST_MISSING.format(missing=exc.name)) from exc
    from kuda.loadtest.cli import main as loadtest_main

    loadtest_main(argv)


@contextmanager
def _database(settings: Settings) -> Iterator[Settings]:
    """Settings with a migrated DATABASE_URL: the configured one, or the embedded server."""
    embedded = EmbeddedPostgres(settings.data_dir) if settings.embedded else None
    try:
        if embedded is not None:
            url = embedded.start()
            settings = settings.model_copy(update={"database_url": url})
        assert settings.database_url is not None
        migrate.upgrade(settings.database_url)
        yield settings
    finally:
        if embedded is not None:
            embedded.stop()


def _create_admin(settings: Settings, args: argparse.Namespace) -> None:
    password = args.password or os.environ.get("KUDA_ADMIN_PASSWORD") or getpass.getpass()
    if len(password) < 8:
        raise ConfigError("the password must have at least 8 characters")
    with _database(settings) as ready:
        created = asyncio.run(admin_tasks.create_admin(ready, args.email, args.name, password))
    print(f"kuda: {args.email} is {'now' if created else 'already'} an administrator")


def _seed(settings: Settings, args: argparse.Namespace) -> None:
    with _database(settings) as ready:
        result = asyncio.run(
            admin_tasks.seed_demo(ready, args.users, args.rides, args.days, args.random_seed)
        )
    print(
        f"kuda: seeded {result.users} users, {result.rides} rides, {result.bookings} bookings, "
        f"{result.reviews} reviews; demo users log in with password {DEMO_PASSWORD!r}"
    )


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    if settings.database_url is None:
        raise ConfigError("`kuda migrate` needs DATABASE_URL (the embedded server migrates itself)")
    if args.check:
        current = migrate.is_current(settings.database_url)
        print(f"kuda: database {'at' if current else 'NOT at'} the latest revision")
        raise SystemExit(0 if current else 1)
    migrate.upgrade(settings.database_url, args.revision)
    print(f"kuda: database at revision {args.revision}")


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1 and settings.metrics_port is not None:
        raise ConfigError(
            "METRICS_PORT serves one process's metrics: run one worker per container "
            "(scale with replicas), or use METRICS_TOKEN on the API port instead."
        )
    if args.workers > 1 and not settings.redis_url:
        raise ConfigError(
            "--workers > 1 needs REDIS_URL: each worker is a separate process, and without Redis "
            "an event published on one worker never reaches sockets held by another."
        )
    _raise_open_files()
    os.environ.setdefault(heap.ENV, "1")  # the app freezes its startup heap (server/heap.py)
    embedded = EmbeddedPostgres(settings.data_dir) if settings.embedded else None
    # uvicorn shuts down on SIGTERM/SIGINT, then re-raises the signal with the previous
    # handler restored: make that handler unwind through `finally` so PostgreSQL stops too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if embedded is not None:
            _prepare_embedded(settings, embedded)
        else:
            settings.signing_key()
            settings.accepted_keys()
        _run_uvicorn(args, settings)
    except KeyboardInterrupt:
        pass  # a clean stop: uvicorn has already drained
    finally:
        if embedded is not None:
            embedded.stop()


def _raise_open_files() -> None:
    """Each socket is a file: take the hard limit on open files where the soft one is lower
    (a common default soft limit of 1,024 would cap an instance near 1,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(
            f"kuda: open-file limit raised from {soft} to {hard} (the hard limit)", file=sys.stderr
        )


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
    for line in (
        f"kuda: API docs at {base}/docs (OpenAPI at {base}/openapi.json)",
        f"kuda: WebSocket at ws://{_display_host(args.host)}:{args.port}/ws",
    ):
        if settings.log_format == "json":
            log.info(line)
        else:
            print(line, file=sys.stderr)
    uvicorn.run(
        "server.app:create_asgi",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        log_config=logs.dict_config(settings),
        proxy_headers=args.proxy_headers,
        ws="channels.transport:KudaWebSocketProtocol"
        if settings.ws_raw_writer
        else "websockets-sansio",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
        # uvicorn's 2,048 overflows when thousands of clients reconnect at once (a restart):
        # dropped SYNs come back only after the kernel's 1 s, 3 s, 7 s... retransmits.
        backlog=settings.listen_backlog,
    )


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
