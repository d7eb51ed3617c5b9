"""What the request-id middleware's log context and HTTP metrics cost per request.

Drives the middleware in-process (no sockets, no server) around a trivial ASGI app that answers
200, so the difference between the variants is the middleware's own CPU time:

    .venv/bin/python bench/observability.py [--requests 200000]

- bare: the trivial app alone
- request id only: `RequestIdMiddleware` without metrics (request id + Server-Timing + log context)
- request id + metrics: the same with `HttpTallies` (what `kuda serve` runs)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from server.http_metrics import HttpTallies
from server.middleware import RequestIdMiddleware


class _Route:
    path = "/api/v1/rides/{ride_id}"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route  # what FastAPI's router leaves in the scope
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _run(app: Any, n: int) -> float:
    headers = [(b"host", b"kuda"), (b"authorization", b"Bearer x")]
    started = time.process_time()
    for _ in range(n):
        scope = {"type": "http", "method": "GET", "path": "/api/v1/rides/7", "headers": headers}
        await app(scope, _receive, _send)
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {
        "bare": _app,
        "request id only": RequestIdMiddleware(_app),
        "request id + metrics": RequestIdMiddleware(_app, tallies=HttpTallies()),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved, so drift hits every variant alike
        for name, app in variants.items():
            results[name].append(await _run(app, args.requests))
    print(f"{args.requests:,} requests x {args.rounds} rounds, CPU us per request (median):")
    base = statistics.median(results["bare"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:22s} {med:6.2f} us   (+{med - base:5.2f} us over bare)")


if __name__ == "__main__":
    asyncio.run(main())
