"""The six scenarios of `kuda loadtest`. Each provisions what it needs through the REST API,
drives the client processes, and fills a `Summary`."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx

from kuda.loadtest import api
from kuda.loadtest.accounting import Histogram, Tally
from kuda.loadtest.cluster import Cluster
from kuda.loadtest.frames import marked
from kuda.loadtest.pool import Pool
from kuda.loadtest.procstat import Group
from kuda.loadtest.report import Cpu, Host, Progress, Summary

SETTLE_S = 2.0
T = TypeVar("T")


@dataclass
class Options:
    scenario: str
    sockets: int = 1000
    procs: int = 2
    users: int = 20
    duration: float = 10.0
    rate: float = 50.0
    publishers: int = 8
    channels: int = 1000
    members: int = 2
    channel: str = "ride"
    concurrency: int = 32
    missed: int = 1
    rides: int = 200
    events: int = 0
    connect_concurrency: int = 16
    progress: bool = True


class Run:
    def __init__(self, opts: Options, cluster: Cluster, pool: Pool, http: httpx.AsyncClient):
        self.opts = opts
        self.cluster = cluster
        self.pool = pool
        self.http = http
        self.servers = Group("servers", cluster.pids)
        # Spawned servers are the tool's children: counted as servers, not as the tool.
        self.tool = Group("tool", [os.getpid(), *pool.pids], exclude=cluster.pids)
        self.summary = Summary(opts.scenario, {k: v for k, v in vars(opts).items()})
        self.progress = Progress(opts.scenario, self.servers, self.tool, opts.progress)
        self.stats: dict[str, Any] = {}
        self.provisioned = 0
        self.host = Host()

    # Helpers -------------------------------------------------------------------------------

    def base(self, i: int) -> str:
        return self.cluster.bases[i % len(self.cluster.bases)]

    def spec(
        self, i: int, user: api.User, channels: list[str], first: int | None = None
    ) -> dict[str, Any]:
        urls = self.cluster.ws_urls
        k = i % len(urls) if first is None else first
        return {
            "urls": urls[k:] + urls[:k],
            "token": user.token,
            "subs": [[c, None] for c in channels],
        }

    async def users(self, n: int) -> list[api.User]:
        self.progress.set(f"registering {n} users")
        return await api.register_many(self.http, self.cluster.bases, n)

    async def for_each(
        self, n: int, call: Callable[[int], Awaitable[T]], limit: int = 16
    ) -> list[T]:
        """`call(i)` for i in range(n), at most `limit` at a time; counts for the progress line."""
        gate = asyncio.Semaphore(limit)
        self.provisioned = 0

        async def one(i: int) -> T:
            async with gate:
                result = await call(i)
                self.provisioned += 1
                return result

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def poll(self) -> dict[str, Any]:
        snaps = await self.pool.each("stats", timeout=120)
        out: dict[str, Any] = {}
        for snap in snaps:
            for key, value in snap.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[key] = out.get(key, 0) + value
        out["p99"] = max((s["p99"] for s in snaps if s["p99"] is not None), default=math.nan)
        codes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for snap in snaps:
            codes.update(snap["close_codes"])
            errors.update(snap["errors"])
        out["close_codes"] = dict(codes)
        out["errors"] = dict(errors)
        out["error_example"] = next((s["error_example"] for s in snaps if s["error_example"]), "")
        self.stats = out
        return out

    def socket_line(self) -> str:
        s = self.stats
        if not s:
            return ""
        p99 = s.get("p99", math.nan)
        lat = f" p99~{1000 * p99:.0f}ms" if not math.isnan(p99) else ""
        return (
            f"sockets {s['ready']:,}/{self.opts.sockets:,} failed {s['failed']:,} "
            f"dropped {s['dropped']:,} | events {s['events']:,}{lat}"
        )

    async def watch(self, until: asyncio.Future[Any] | asyncio.Task[Any]) -> Any:
        """Poll the workers for the progress line while `until` runs."""
        try:
            while not until.done():
                await self.poll()
                await asyncio.wait({until}, timeout=1.0)
        except BaseException:
            until.cancel()
            raise
        return until.result()

    async def open(self, specs: list[dict[str, Any]], resume: bool = False) -> float:
        self.opts.sockets = len(specs)
        self.progress.set("connecting", self.socket_line)
        t0 = time.monotonic()
        task = asyncio.ensure_future(
            self.pool.scatter(
                "open",
                "specs",
                self.pool.split(specs),
                concurrency=max(1, self.opts.connect_concurrency // len(self.pool.workers)),
                resume=resume,
            )
        )
        await self.watch(task)
        s = await self.poll()
        while s["ready"] < s["opened"] and time.monotonic() - t0 < 120:  # subscribes acked
            await asyncio.sleep(0.05)
            s = await self.poll()
        connect_s = time.monotonic() - t0
        self.summary.add("sockets", "sockets", len(specs), "{:,}")
        self.summary.add("connect_s", "connect + subscribe, all sockets (s)", connect_s, "{:.2f}")
        self.summary.add(
            "connect_rate", "connect rate (sockets/s)", len(specs) / connect_s, "{:,.0f}"
        )
        self.summary.add("connect_failed", "sockets failed to open", s["failed"], "{:,}")
        unacked = s["opened"] - s["ready"]
        self.summary.add(
            "subscribe_failed", "sockets whose subscribe was not acked", unacked, "{:,}"
        )
        if s["error_example"]:
            self.summary.notes.append(f"first client error: {s['error_example']}")
        return connect_s

    async def histograms(
        self, expect: dict[str, int]
    ) -> tuple[Tally, dict[str, Histogram], dict[str, Any]]:
        reports = await self.pool.each("report", timeout=120, expect=expect)
        tally = Tally()
        hists = {k: Histogram() for k in ("latency", "connect", "subscribe", "resume")}
        for r in reports:
            t = r["tally"]
            tally.add(Tally(t["received"], t["lost"], t["duplicated"], t["out_of_order"]))
            for key, h in hists.items():
                h.merge(Histogram.from_dict(r[key]))
        return tally, hists, await self.poll()

    async def wait_complete(self, expect: dict[str, int], quiet_s: float = 15.0) -> float | None:
        """Until every stream holds every expected event; None if deliveries stalled for
        `quiet_s` first."""
        last_events, last_change = -1, time.monotonic()
        first = True
        while True:
            # The map goes once; later polls ask about the one the client processes kept.
            kw = {"expect": expect} if first else {}
            first = False
            parts = await self.pool.each("progress", timeout=60, **kw)
            now = time.monotonic()
            if sum(p["complete"] for p in parts) >= sum(p["streams"] for p in parts):
                return now
            events = (await self.poll())["events"]
            if events != last_events:
                last_events, last_change = events, now
            elif now - last_change > quiet_s:
                return None
            await asyncio.sleep(0.1)

    def delivery_rows(self, tally: Tally, hists: dict[str, Histogram], s: dict[str, Any]) -> None:
        add = self.summary.add
        add("delivered", "events delivered", tally.received, "{:,}")
        add("lost", "lost", tally.lost, "{:,}")
        add("duplicated", "duplicated", tally.duplicated, "{:,}")
        add("out_of_order", "out of order", tally.out_of_order, "{:,}")
        add("dropped", "sockets dropped by the server", s["dropped"], "{:,}")
        if s["close_codes"]:
            add("close_codes", "close codes seen", s["close_codes"])
        if s["errors"]:
            add("client_errors", "client-side errors", s["errors"])
        self.summary.latency("latency", "commit-to-socket", hists["latency"])

    def meters(self) -> tuple[Cpu, Cpu]:
        """Start measuring the servers' and the tool's CPU (and the host's: `host_rows`)."""
        self.host = Host()
        return Cpu(self.servers), Cpu(self.tool)

    def host_rows(self, prefix: str = "", label: str = "") -> None:
        """PostgreSQL's and Redis's CPU and the machine's busy share since `meters()`."""
        add, host = self.summary.add, self.host
        add(
            f"{prefix}postgres_cpu_pct",
            f"{label}PostgreSQL's CPU, every postgres process here (% of one core)",
            host.postgres.percent(),
            "{:.0f}",
        )
        add(
            f"{prefix}redis_cpu_pct",
            f"{label}Redis's CPU, every redis-server here (% of one core)",
            host.redis.percent(),
            "{:.0f}",
        )
        add(
            f"{prefix}machine_busy_pct",
            f"{label}machine busy (% of all {os.cpu_count()} cores)",
            host.machine_percent(),
            "{:.0f}",
        )

    def cpu_rows(self, servers: Cpu, tool: Cpu, per: float, unit: str) -> None:
        add = self.summary.add
        add("server_cpu_pct", "servers' CPU (% of one core)", servers.percent(), "{:.0f}")
        add(
            "tool_cpu_pct",
            "this tool's CPU, all its processes (% of one core)",
            tool.percent(),
            "{:.0f}",
        )
        self.host_rows()
        if per > 0:
            add(
                f"server_cpu_per_{unit}_us",
                f"server CPU per {unit} (µs)",
                1e6 * servers.seconds() / per,
                "{:.2f}",
            )

    async def publish(
        self,
        call: Callable[[int], Awaitable[None]],
        rate: float,
        seconds: float,
        concurrency: int,
        count: int | None = None,
        first: int = 1,
    ) -> tuple[int, int, float, Histogram]:
        """Calls `call(n)` for n = first, first + 1, ...: paced at `rate`/s for `seconds` (at
        most `concurrency` in flight), or with rate 0 as fast as `concurrency` loops go, for
        `seconds` or until `count` calls."""
        ok = failed = 0
        took = Histogram()
        gate = asyncio.Semaphore(concurrency)
        counter = first - 1
        last = None if count is None else first - 1 + count

        async def one(n: int) -> None:
            nonlocal ok, failed
            t = time.monotonic()
            try:
                await call(n)
                ok += 1
            except Exception as exc:
                failed += 1
                if failed == 1:
                    self.summary.notes.append(f"first publish error: {exc}")
            finally:
                took.record(time.monotonic() - t)
                gate.release()

        start = time.monotonic()
        deadline = start + seconds
        tasks: list[asyncio.Task[None]] = []
        if rate > 0:
            for k in range(round(rate * seconds) if count is None else count):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                tasks.append(asyncio.create_task(one(first + k)))
        else:

            async def loop() -> None:
                nonlocal counter
                while (last is None and time.monotonic() < deadline) or (
                    last is not None and counter < last
                ):
                    counter += 1
                    await gate.acquire()
                    await one(counter)

            await asyncio.gather(*(loop() for _ in range(concurrency)))
        await asyncio.gather(*tasks)
        return ok, failed, time.monotonic() - start, took


async def create_ride(run: Run, users: list[api.User], i: int) -> int:
    return await api.create_ride(run.http, run.base(i), users[i % len(users)], api.ride_body(i))


# Scenarios ---------------------------------------------------------------------------------


async def idle(run: Run) -> None:
    o = run.opts
    users = await run.users(max(1, min(o.users, o.sockets)))
    before = run.servers.sample()
    specs = [
        run.spec(i, users[i % len(users)], [f"user:{users[i % len(users)].id}"])
        for i in range(o.sockets)
    ]
    await run.open(specs)
    await asyncio.sleep(SETTLE_S)
    after = run.servers.sample()
    ready = run.stats["ready"]
    add = run.summary.add
    add("rss_before_mib", "servers' RSS before the sockets (MiB)", before.rss_kib / 1024, "{:.1f}")
    add("rss_after_mib", "servers' RSS with the sockets open (MiB)", after.rss_kib / 1024, "{:.1f}")
    add(
        "rss_per_socket_kib",
        "server RSS per idle socket (KiB)",
        (after.rss_kib - before.rss_kib) / max(1, ready),
        "{:.1f}",
    )
    servers, tool = run.meters()
    run.progress.set(
        f"holding {ready:,} sockets for {o.duration:g} s (server heartbeats on)", run.socket_line
    )
    hold = asyncio.ensure_future(asyncio.sleep(o.duration))
    await run.watch(hold)
    end = run.servers.sample()
    add("rss_end_mib", "servers' RSS at the end of the hold (MiB)", end.rss_kib / 1024, "{:.1f}")
    run.cpu_rows(servers, tool, 0, "socket")
    pongs0 = run.stats["pongs"]
    sent = sum(r["sent"] for r in await run.pool.each("ping", timeout=30))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and run.stats["pongs"] - pongs0 < sent:
        await run.poll()
        await asyncio.sleep(0.2)
    s = await run.poll()
    add("alive", "sockets answering a ping op after the hold", s["pongs"] - pongs0, "{:,}")
    add("dropped", "sockets dropped by the server", s["dropped"], "{:,}")
    if s["close_codes"]:
        add("close_codes", "close codes seen", s["close_codes"])


async def hot(run: Run) -> None:
    o = run.opts
    users = await run.users(max(2, min(o.users, o.sockets)))
    driver = users[0]
    board = o.channel == "rides"
    ride = 0
    if board:
        channel = "rides"
    else:
        ride = await api.create_ride(run.http, run.base(0), driver, api.ride_body(0))
        channel = f"ride:{ride}"
    before = run.servers.sample()
    specs = [run.spec(i, users[i % len(users)], [channel]) for i in range(o.sockets)]
    await run.open(specs)
    await asyncio.sleep(SETTLE_S)
    after = run.servers.sample()
    ready = max(1, run.stats["ready"])
    add = run.summary.add
    rss = (after.rss_kib - before.rss_kib) / ready
    add("rss_per_socket_kib", "server RSS per subscribed socket (KiB)", rss, "{:.1f}")

    async def call(n: int) -> None:
        base = run.base(n)
        if board:
            await api.create_ride(run.http, base, driver, api.ride_body(n, notes=marked(n)))
        else:
            await api.patch_ride(run.http, base, driver, ride, marked(n))

    async def expected(published: int) -> dict[str, int]:
        if board:
            return {channel: published}
        return {channel: await api.channel_head(run.http, run.base(0), driver, channel)}

    what = "POST /rides" if board else f"PATCH /rides/{{id}} -> {channel}"
    published = 0
    if o.events > 0:  # throughput: events back to back
        await run.pool.each("reset_latency")
        servers, tool = run.meters()
        run.progress.set(f"{o.events} events back to back ({what})", run.socket_line)
        t0 = time.monotonic()
        pub = asyncio.ensure_future(run.publish(call, 0, 0, o.publishers, count=o.events))
        ok, failed, pub_s, _ = await run.watch(pub)
        published = ok + failed
        done = await run.wait_complete(await expected(published))
        deliveries = run.stats["ready"] * ok
        add("throughput_events", "back to back: events published", ok, "{:,}")
        add("throughput_publish_rate", "back to back: publish rate (/s)", ok / pub_s, "{:,.1f}")
        if done is not None:
            add(
                "first_to_all_s",
                "back to back: first publish -> all delivered (s)",
                done - t0,
                "{:.3f}",
            )
            add(
                "deliveries_per_s",
                "back to back: deliveries/s",
                deliveries / (done - t0),
                "{:,.0f}",
            )
        else:
            add("deliveries_per_s", "back to back: deliveries/s", None)
            run.summary.notes.append("back to back: deliveries stalled before all arrived")
        cpu = servers.seconds()
        add(
            "throughput_server_cpu_per_delivery_us",
            "back to back: server CPU per delivery (µs)",
            1e6 * cpu / max(1, deliveries),
            "{:.2f}",
        )
        add(
            "throughput_tool_cpu_pct",
            "back to back: this tool's CPU (% of one core)",
            tool.percent(),
            "{:.0f}",
        )
        run.host_rows("throughput_", "back to back: ")
    if o.rate > 0:  # latency at a steady rate
        await run.pool.each("reset_latency")
        servers, tool = run.meters()
        run.progress.set(f"{o.rate:g} events/s for {o.duration:g} s ({what})", run.socket_line)
        t0 = time.monotonic()
        pub = asyncio.ensure_future(
            run.publish(call, o.rate, o.duration, o.publishers, first=published + 1)
        )
        ok, failed, pub_s, took = await run.watch(pub)
        published += ok + failed
        run.progress.set("waiting for every socket to hold every event", run.socket_line)
        done = await run.wait_complete(await expected(published))
        add("published", "steady: events published through REST", ok, "{:,}")
        add("publish_failed", "steady: publish calls failed", failed, "{:,}")
        add("publish_rate", "steady: publish rate achieved (/s)", ok / pub_s, "{:,.1f}")
        run.summary.latency("publish_call", "steady: REST publish call", took)
        if done is None:
            run.summary.notes.append("deliveries stalled before every socket had every event")
        run.cpu_rows(servers, tool, run.stats["ready"] * ok, "delivery")
    tally, hists, s = await run.histograms(await expected(published))
    run.delivery_rows(tally, hists, s)


async def many(run: Run) -> None:
    o = run.opts
    users = await run.users(max(2 * o.members, min(o.users, o.channels * o.members)))
    # Drivers and passengers are different accounts: a booking locks the passenger's channel
    # and then the driver's, so mixing roles would make two bookings lock them in opposite
    # orders (a deadlock in PostgreSQL; reported on BOARD.md), which provisioning avoids.
    half = len(users) // 2
    drivers, passengers = users[:half], users[half:]
    per = o.members - 1
    run.progress.set(
        f"creating {o.channels:,} rides with {per} passenger(s) each",
        lambda: f"{run.provisioned:,} done",
    )

    def members(i: int) -> list[api.User]:
        return [drivers[i % half]] + [
            passengers[(i * per + m) % len(passengers)] for m in range(per)
        ]

    async def provision(i: int) -> int:
        driver, *riders = members(i)
        ride = await api.create_ride(run.http, run.base(i), driver, api.ride_body(i))
        for m, rider in enumerate(riders):
            await api.book(run.http, run.base(i + m + 1), rider, ride)
        return ride

    rides = await run.for_each(o.channels, provision)
    specs: list[dict[str, Any]] = []
    for i, ride in enumerate(rides):
        for member in members(i):
            specs.append(run.spec(len(specs), member, [f"ride:{ride}:chat"]))
    await run.open(specs)
    await run.pool.each("reset_latency")
    posted: Counter[int] = Counter()

    async def call(n: int) -> None:
        k = n % len(rides)
        await api.post_message(run.http, run.base(n), drivers[k % half], rides[k], f"message {n}")
        posted[k] += 1

    servers, tool = run.meters()
    run.progress.set(f"posting chat messages over {len(rides):,} chats", run.socket_line)
    t0 = time.monotonic()
    pub = asyncio.ensure_future(run.publish(call, o.rate, o.duration, o.publishers))
    ok, failed, pub_s, took = await run.watch(pub)
    expect = {f"ride:{rides[k]}:chat": posted[k] for k in range(len(rides))}
    run.progress.set("waiting for every socket to hold every message", run.socket_line)
    done = await run.wait_complete(expect)
    tally, hists, s = await run.histograms(expect)
    add = run.summary.add
    add("channels", "channels (ride chats)", len(rides), "{:,}")
    add("published", "messages posted through REST", ok, "{:,}")
    add("publish_failed", "post calls failed", failed, "{:,}")
    add("publish_rate", "durable events appended per s", ok / pub_s, "{:,.1f}")
    run.summary.latency("publish_call", "REST post call", took)
    if done is not None:
        add("deliveries_per_s", "delivered events/s", tally.received / (done - t0), "{:,.0f}")
    run.delivery_rows(tally, hists, s)
    run.cpu_rows(servers, tool, tally.received, "delivery")


async def churn(run: Run) -> None:
    o = run.opts
    users = await run.users(max(1, o.users))
    before = run.servers.sample()
    specs = [run.spec(i, u, [f"user:{u.id}"]) for i, u in enumerate(users)]
    per_proc = max(1, o.concurrency // len(run.pool.workers))
    servers, tool = run.meters()
    run.progress.set(
        f"connect/subscribe/close storm, {per_proc * len(run.pool.workers)} loops",
        lambda: f"cycles {run.stats.get('cycles', 0):,} failed {run.stats.get('failed', 0):,}",
    )
    t0 = time.monotonic()
    task = asyncio.ensure_future(
        run.pool.scatter(
            "churn",
            "spec",
            [specs[i % len(specs)] for i in range(len(run.pool.workers))],
            timeout=o.duration + 120,
            seconds=o.duration,
            concurrency=per_proc,
        )
    )
    await run.watch(task)
    wall = time.monotonic() - t0
    await asyncio.sleep(SETTLE_S)
    after = run.servers.sample()
    _, hists, s = await run.histograms({})
    add = run.summary.add
    add("cycles", "connect + subscribe + close cycles", s["cycles"], "{:,}")
    add("cycles_per_s", "cycles per second", s["cycles"] / wall, "{:,.0f}")
    add("failed", "failed cycles", s["failed"], "{:,}")
    if s["errors"]:
        add("client_errors", "client-side errors", s["errors"])
    run.summary.latency("connect", "connect -> welcome", hists["connect"])
    run.summary.latency("subscribe", "subscribe -> subscribed", hists["subscribe"])
    add(
        "rss_growth_mib",
        "servers' RSS growth over the storm (MiB)",
        (after.rss_kib - before.rss_kib) / 1024,
        "{:.1f}",
    )
    run.cpu_rows(servers, tool, s["cycles"], "cycle")


async def resume(run: Run) -> None:
    o = run.opts
    if not run.cluster.instances or len(run.cluster.instances) < 2:
        raise SystemExit(
            "kuda loadtest resume restarts an instance: run it with --spawn 2 (or more)"
        )
    users = await run.users(max(1, min(o.users, o.sockets)))
    n_users = len(users)
    run.progress.set(
        f"creating {o.sockets:,} rides (one channel per client)",
        lambda: f"{run.provisioned:,} done",
    )
    rides = await run.for_each(o.sockets, partial(create_ride, run, users))
    specs = [
        run.spec(i, users[i % n_users], [f"ride:{rides[i]}"], first=0) for i in range(o.sockets)
    ]
    await run.open(specs, resume=True)
    await run.pool.each("hold")
    run.progress.set("stopping instance 0 (SIGTERM: its sockets get 1012)", run.socket_line)
    inst = run.cluster.instances[0]
    await asyncio.to_thread(inst.stop)
    survivors = run.cluster.bases[1:]
    run.progress.set(
        f"committing {o.missed} event(s) on each channel meanwhile",
        lambda: f"{run.provisioned:,} done",
    )

    async def miss(j: int) -> None:
        i, k = divmod(j, o.missed)
        base = survivors[j % len(survivors)]
        await api.patch_ride(run.http, base, users[i % n_users], rides[i], marked(k))

    await run.for_each(o.sockets * o.missed, miss)
    run.progress.set("starting instance 0 again", run.socket_line)
    inst.start()
    await inst.wait_ready()
    run.cluster.pids[0] = inst.pid
    run.servers.roots = list(run.cluster.pids)
    run.tool.exclude = list(run.cluster.pids)  # the restarted server is not the tool either
    s = await run.poll()
    add = run.summary.add
    add("disconnected", "clients disconnected by the restart", s["dropped"], "{:,}")
    servers, tool = run.meters()
    run.progress.set(
        "every client reconnects with since",
        lambda: f"recovered {run.stats.get('recovered', 0):,}/{o.sockets:,} | " + run.socket_line(),
    )
    t0 = time.monotonic()
    await run.pool.each("release")
    expect = {f"ride:{r}": o.missed for r in rides}
    done = await run.wait_complete(expect)
    while done is not None and (await run.poll())["recovered"] < s["dropped"]:
        await asyncio.sleep(0.1)
        done = time.monotonic()
    tally, hists, s = await run.histograms(expect)
    add(
        "recovered",
        "clients recovered (subscribed with since, recovered: true)",
        s["recovered"],
        "{:,}",
    )
    add("unrecovered", "clients told recovered: false", s["unrecovered"], "{:,}")
    add(
        "all_recovered_s",
        "release -> every client recovered every missed event (s)",
        None if done is None else done - t0,
        "{:.2f}",
    )
    run.summary.latency("resume", "per client, release -> subscribed", hists["resume"])
    add("reconnect_attempts", "reconnect attempts", s["reconnects"], "{:,}")
    add("lost", "lost", tally.lost, "{:,}")
    add("duplicated", "duplicated", tally.duplicated, "{:,}")
    add("out_of_order", "out of order", tally.out_of_order, "{:,}")
    run.cpu_rows(servers, tool, 0, "client")


async def rest(run: Run) -> None:
    o = run.opts
    users = await run.users(max(2, o.users))
    n_users = len(users)
    run.progress.set(f"creating {o.rides:,} rides", lambda: f"{run.provisioned:,} done")
    rides = await run.for_each(o.rides, partial(create_ride, run, users))
    loops = max(1, o.concurrency // len(run.pool.workers))
    req: dict[str, Any] = {
        "bases": run.cluster.bases,
        "users": [{"id": u.id, "token": u.token} for u in users],
        "rides": [{"id": r, "driver": users[i % n_users].id} for i, r in enumerate(rides)],
        "seconds": o.duration,
        "concurrency": loops,
    }
    servers, tool = run.meters()
    run.progress.set(f"{loops * len(run.pool.workers)} virtual users for {o.duration:g} s")
    t0 = time.monotonic()
    task = asyncio.ensure_future(run.pool.each("rest", timeout=o.duration + 300, **req))
    results = await run.watch(task)
    wall = time.monotonic() - t0
    lat: dict[str, Histogram] = {}
    status: dict[str, Counter[str]] = {}
    for r in results:
        for op, h in r["latency"].items():
            lat.setdefault(op, Histogram()).merge(Histogram.from_dict(h))
        for op, c in r["status"].items():
            status.setdefault(op, Counter()).update(c)
        if r["example"]:
            run.summary.notes.append(f"example non-2xx: {r['example']}")
    requests = sum(h.count for h in lat.values())
    add = run.summary.add
    add("requests", "requests", requests, "{:,}")
    add("requests_per_s", "requests per second", requests / wall, "{:,.0f}")
    for op in sorted(lat):
        c = status[op]
        run.summary.latency(f"op_{op}", f"{op} ({lat[op].count:,}; {dict(c)})", lat[op])
    run.cpu_rows(servers, tool, 0, "request")
    add(
        "server_cpu_per_request_ms",
        "server CPU per request (ms)",
        1000 * servers.seconds() / max(1, requests),
        "{:.2f}",
    )


SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "idle": idle,
    "hot": hot,
    "many": many,
    "churn": churn,
    "resume": resume,
    "rest": rest,
}
