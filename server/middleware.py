"""Pure ASGI middleware: request ids, log context and HTTP metrics, and the request body limit
(no per-request task overhead)."""

from __future__ import annotations

import itertools
import json
import secrets
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from channels import logctx
from server.errors import error_body
from server.http_metrics import HttpTallies, route_of

NO_STORE_PREFIXES = ("/api/v1/auth/", "/api/v1/users/me")
"""Responses that carry tokens or private account data: never stored by any cache."""


class RequestIdMiddleware:
    """Gives each HTTP request an id (from `X-Request-ID` when sane) and echoes it back, with
    the server-side time to the response's start in `Server-Timing: app;dur=<ms>`. Also sets
    `X-Content-Type-Options: nosniff` on every response, and `Cache-Control: no-store` on
    token and account responses. Binds the id to the log context for the request, and counts
    the request in `tallies` (route template, status, latency to the end of the response)."""

    def __init__(self, app: ASGIApp, tallies: HttpTallies | None = None) -> None:
        self.app = app
        self.tallies = tallies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or _new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        no_store = scope["path"].startswith(NO_STORE_PREFIXES)
        token = logctx.bind(request_id=request_id)
        status = 500  # if the app fails before answering, the server answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"server-timing", b"app;dur=%.2f" % elapsed_ms))
                headers.append((b"x-content-type-options", b"nosniff"))
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                    headers.append((b"pragma", b"no-cache"))
                message["headers"] = headers
            await send(message)

        tallies = self.tallies
        if tallies is not None:
            tallies.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logctx.reset(token)
            if tallies is not None:
                tallies.in_flight -= 1
                elapsed = time.perf_counter() - started
                tallies.observe(scope["method"], route_of(scope), status, elapsed)


# 32 hex characters, unique without a syscall per request (uuid4 reads os.urandom: about 2 us):
# a random prefix per process and a counter.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 64 and text.replace("-", "").isalnum():
                return text
    return None


class BodyTooLarge(HTTPException):
    """Raised while a body streams in; an HTTPException so FastAPI re-raises it unchanged."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body exceeds {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        limit = self.max_bytes
        body = json.dumps(
            error_body("too_large", f"Request body exceeds {limit} bytes", {"max_bytes": limit})
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
