"""Evidence check: does encode/broadcaster (Redis backend) fit Kuda's pub/sub fan-out?

Measures, against the installed ``broadcaster`` and ``redis`` packages:

(a) fan-out delivery: one publisher ``Broadcast`` publishes N messages to one channel while
    M subscribers share ONE other ``Broadcast`` instance (its own Redis connection).
    Subscribers are started either all at once (``concurrent``, the requirement) or one
    after the other (``sequential``, a diagnostic that rules out subscribe-time races).
(b) Redis restart: a test-owned ``redis-server`` on ``--restart-port`` is shut down and
    restarted under a live subscriber; do messages published afterwards arrive?

Every wait is bounded; the whole run is capped at ``--budget-s`` seconds and the
test-owned Redis is always shut down.  The shared Redis at ``--redis-url`` is only used
for PUBLISH/SUBSCRIBE/PUBSUB NUMSUB on a uniquely named channel (never flushed).

    python bench/broadcaster_check.py [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from broadcaster import Broadcast

N_MESSAGES = 1000
N_SUBSCRIBERS = 200
DELIVERY_WAIT_S = 10.0
RESTART_MESSAGES = 10
RESTART_SETTLE_S = 3.0
RESTART_DELIVERY_WAIT_S = 3.0


# --------------------------------------------------------------------------- helpers


def task_state(task: asyncio.Task[Any] | None) -> str:
    if task is None:
        return "absent"
    if not task.done():
        return "running"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if exc is None:
        return "finished"
    return f"raised {type(exc).__name__}: {exc}"[:90]


def count_backend_subscribes(bc: Broadcast) -> list[str]:
    """Record every channel the Broadcast asks its backend to SUBSCRIBE (behaviour unchanged)."""
    calls: list[str] = []
    backend = bc._backend
    original: Callable[[str], Awaitable[None]] = backend.subscribe

    async def counting(channel: str) -> None:
        calls.append(channel)
        await original(channel)

    backend.subscribe = counting  # type: ignore[method-assign,assignment]
    return calls


async def numsub(url: str, channel: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        rows = await asyncio.wait_for(client.pubsub_numsub(channel), 2.0)
        return int(rows[0][1]) if rows else 0
    finally:
        await client.aclose()


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``predicate`` until true or ``timeout_s``; return the seconds waited."""
    start = time.monotonic()
    while True:
        if predicate() or time.monotonic() - start >= timeout_s:
            return time.monotonic() - start
        await asyncio.sleep(0.02)


async def close_quietly(bc: Broadcast, errors: list[str]) -> None:
    try:
        await asyncio.wait_for(bc.disconnect(), 3.0)
    except Exception as exc:  # evidence: record whatever disconnect raises
        errors.append(f"disconnect: {type(exc).__name__}: {exc}"[:90])


async def cancel_all(tasks: list[asyncio.Task[None]]) -> list[str]:
    for t in tasks:
        t.cancel()
    done, pending = await asyncio.wait(tasks, timeout=5.0) if tasks else (set(), set())
    errors = [f"teardown hung: {len(pending)} task(s)"] if pending else []
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            errors.append(f"{type(exc).__name__}: {exc}"[:90])
    return errors


# --------------------------------------------------------------------------- (a) fan-out


@dataclass
class FanoutResult:
    mode: str
    counts: list[int]
    complete_in_order: int
    ordered: int
    ready: int
    backend_subscribes: int
    numsub: int
    publish_s: float
    waited_s: float
    teardown_errors: list[str] = field(default_factory=list)


async def subscriber(
    bc: Broadcast, channel: str, received: list[int], ready: asyncio.Event
) -> None:
    async with bc.subscribe(channel) as sub:
        ready.set()
        # broadcaster 0.3.1 annotates Subscriber.__aiter__ as "AsyncGenerator | None"
        async for event in sub:  # type: ignore[union-attr]
            if event is None:
                break
            received.append(int(event.message))


async def run_fanout(url: str, mode: str, n_msgs: int, n_subs: int) -> FanoutResult:
    channel = f"kuda-bc-check-{uuid.uuid4().hex[:12]}"
    sub_bc = Broadcast(url)
    await asyncio.wait_for(sub_bc.connect(), 5.0)
    subscribe_calls = count_backend_subscribes(sub_bc)
    received: list[list[int]] = [[] for _ in range(n_subs)]
    readies = [asyncio.Event() for _ in range(n_subs)]
    tasks: list[asyncio.Task[None]] = []
    errors: list[str] = []
    try:
        for i in range(n_subs):
            tasks.append(asyncio.create_task(subscriber(sub_bc, channel, received[i], readies[i])))
            if mode == "sequential":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(readies[i].wait(), 5.0)
        await wait_until(lambda: all(r.is_set() for r in readies), 10.0)
        # the broker must have acknowledged the subscription before we publish
        deadline = time.monotonic() + 5.0
        subs_at_broker = await numsub(url, channel)
        while subs_at_broker < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            subs_at_broker = await numsub(url, channel)

        pub_bc = Broadcast(url)
        await asyncio.wait_for(pub_bc.connect(), 5.0)
        t0 = time.monotonic()
        for i in range(n_msgs):
            await pub_bc.publish(channel, str(i))
        publish_s = time.monotonic() - t0
        await close_quietly(pub_bc, errors)

        waited = await wait_until(lambda: all(len(r) >= n_msgs for r in received), DELIVERY_WAIT_S)
        counts = [len(r) for r in received]
        expected = list(range(n_msgs))
        return FanoutResult(
            mode=mode,
            counts=counts,
            complete_in_order=sum(r == expected for r in received),
            ordered=sum(all(a < b for a, b in itertools.pairwise(r)) for r in received),
            ready=sum(r.is_set() for r in readies),
            backend_subscribes=len(subscribe_calls),
            numsub=subs_at_broker,
            publish_s=publish_s,
            waited_s=waited,
            teardown_errors=errors,
        )
    finally:
        errors.extend(await cancel_all(tasks))
        await close_quietly(sub_bc, errors)


# --------------------------------------------------------------------------- (b) restart


class TestRedis:
    """A throw-away redis-server owned by this script (never the shared one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="kuda-bc-redis-"))
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server / redis-cli not on PATH")
        self.server, self.cli = server, cli

    def port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    async def _exec(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await asyncio.wait_for(proc.wait(), 5.0)

    async def start(self) -> None:
        await self._exec(
            self.server, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "yes",
            "--dir", str(self.dir), "--pidfile", str(self.dir / "redis.pid"),
        )  # fmt: skip
        await wait_until(self.port_open, 5.0)
        if not self.port_open():
            raise RuntimeError(f"test redis did not come up on {self.port}")

    async def stop(self) -> None:
        if self.port_open():
            await self._exec(self.cli, "-p", str(self.port), "shutdown", "nosave")
            await wait_until(lambda: not self.port_open(), 5.0)


@dataclass
class RestartResult:
    outage_s: float
    before: int
    after: int
    numsub_before: int
    numsub_after: int
    publish_after_error: str
    subscriber: str
    backend_listener: str
    broadcast_listener: str
    loop_errors: list[str]
    teardown_errors: list[str]


async def run_restart(port: int, extra_outage_s: float, loop_errors: list[str]) -> RestartResult:
    srv = TestRedis(port)
    if srv.port_open():
        raise RuntimeError(f"port {port} already in use; refusing to touch it")
    channel = "kuda-bc-restart"
    received: list[int] = []
    ready = asyncio.Event()
    errors: list[str] = []
    first_loop_error = len(loop_errors)
    await srv.start()
    try:
        sub_bc = Broadcast(srv.url)
        await asyncio.wait_for(sub_bc.connect(), 5.0)
        task = asyncio.create_task(subscriber(sub_bc, channel, received, ready))
        await asyncio.wait_for(ready.wait(), 5.0)
        await wait_until(lambda: False, 0.3)  # let SUBSCRIBE reach the broker
        numsub_before = await numsub(srv.url, channel)

        pub1 = Broadcast(srv.url)
        await asyncio.wait_for(pub1.connect(), 5.0)
        for i in range(RESTART_MESSAGES):
            await pub1.publish(channel, str(i))
        await wait_until(lambda: len(received) >= RESTART_MESSAGES, RESTART_DELIVERY_WAIT_S)
        before = len(received)

        t_down = time.monotonic()
        await srv.stop()
        await asyncio.sleep(extra_outage_s)
        await srv.start()
        outage_s = time.monotonic() - t_down
        await asyncio.sleep(RESTART_SETTLE_S)
        numsub_after = await numsub(srv.url, channel)

        publish_error = "-"
        pub2 = Broadcast(srv.url)
        try:
            await asyncio.wait_for(pub2.connect(), 5.0)
            for i in range(RESTART_MESSAGES, 2 * RESTART_MESSAGES):
                await asyncio.wait_for(pub2.publish(channel, str(i)), 2.0)
        except Exception as exc:  # evidence: record, do not crash
            publish_error = f"{type(exc).__name__}: {exc}"[:90]
        await wait_until(lambda: len(received) >= 2 * RESTART_MESSAGES, RESTART_DELIVERY_WAIT_S)
        backend_listener = getattr(sub_bc._backend, "_listener", None)
        result = RestartResult(
            outage_s=outage_s,
            before=before,
            after=len(received) - before,
            numsub_before=numsub_before,
            numsub_after=numsub_after,
            publish_after_error=publish_error,
            subscriber=task_state(task),
            backend_listener=task_state(backend_listener),
            broadcast_listener=task_state(sub_bc._listener_task),
            loop_errors=[],
            teardown_errors=errors,
        )
        errors.extend(await cancel_all([task]))
        for bc in (pub1, pub2, sub_bc):
            await close_quietly(bc, errors)
        await asyncio.sleep(0.1)
        result.loop_errors = loop_errors[first_loop_error:]
        return result
    finally:
        await srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def print_fanout(r: FanoutResult, n_msgs: int) -> None:
    c = sorted(r.counts)
    total = sum(c)
    pct = 100.0 * total / (n_msgs * len(c))
    print(
        f"{r.mode:<11} {len(c):>4} {r.ready:>5} {r.backend_subscribes:>6} {r.numsub:>6} "
        f"{c[0]:>5} {statistics.median(c):>7.0f} {c[-1]:>5} {pct:>7.1f}% "
        f"{r.complete_in_order:>9} {r.ordered:>7} {r.publish_s:>6.2f} {r.waited_s:>6.2f}"
    )
    for e in r.teardown_errors[:3]:
        print(f"    teardown: {e}")
    if len(r.teardown_errors) > 3:
        print(f"    teardown: ... {len(r.teardown_errors)} errors in total")


def print_restart(r: RestartResult) -> None:
    print(f"  outage (shutdown -> port open again): {r.outage_s:.2f} s")
    print(f"  received before restart: {r.before}/{RESTART_MESSAGES}  (NUMSUB {r.numsub_before})")
    print(f"  NUMSUB {RESTART_SETTLE_S:.0f} s after restart: {r.numsub_after}")
    print(f"  fresh publisher after restart: error={r.publish_after_error}")
    print(f"  received after restart: {r.after}/{RESTART_MESSAGES}")
    print(f"  subscriber task: {r.subscriber}")
    print(f"  RedisBackend._listener task: {r.backend_listener}")
    print(f"  Broadcast._listener_task: {r.broadcast_listener}")
    for e in r.loop_errors[:4]:
        print(f"  unhandled (loop handler): {e}")
    for e in r.teardown_errors[:4]:
        print(f"  teardown: {e}")


async def main(args: argparse.Namespace) -> int:
    loop_errors: list[str] = []

    def on_loop_error(_loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        detail = f"{type(exc).__name__}: {exc}" if exc else ""
        loop_errors.append(f"{ctx.get('message', '')} {detail}"[:110])

    asyncio.get_running_loop().set_exception_handler(on_loop_error)
    print(
        f"python {platform.python_version()} | redis-py {version('redis')} | "
        f"broadcaster {version('broadcaster')} | url {args.redis_url}"
    )
    try:
        async with asyncio.timeout(args.budget_s):
            if not args.skip_fanout:
                print(
                    f"\n(a) fan-out: N={args.messages} msgs, M={args.subscribers} subscribers "
                    f"on one Broadcast, wait <= {DELIVERY_WAIT_S:.0f} s"
                )
                print(
                    "mode           M ready subcmd numsub   min  median   max  deliv.% "
                    "full+ord ordered  pub_s wait_s"
                )
                for mode in ("concurrent", "sequential"):
                    r = await run_fanout(args.redis_url, mode, args.messages, args.subscribers)
                    print_fanout(r, args.messages)
            if not args.skip_restart:
                for outage in args.outages:
                    print(
                        f"\n(b) restart of test redis :{args.restart_port}, "
                        f"extra outage {outage:.0f} s"
                    )
                    print_restart(await run_restart(args.restart_port, outage, loop_errors))
    except TimeoutError:
        print(f"\nABORTED: overall budget of {args.budget_s:.0f} s exceeded")
        return 2
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--messages", type=int, default=N_MESSAGES)
    p.add_argument("--subscribers", type=int, default=N_SUBSCRIBERS)
    p.add_argument("--restart-port", type=int, default=26390)
    p.add_argument(
        "--outages",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[0.0, 5.0],
        help="extra seconds the test redis stays down, comma separated (default 0,5)",
    )
    p.add_argument("--budget-s", type=float, default=58.0)
    p.add_argument("--skip-fanout", action="store_true")
    p.add_argument("--skip-restart", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
