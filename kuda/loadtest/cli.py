"""`kuda loadtest SCENARIO`: argument parsing and the run's lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kuda.loadtest import api
from kuda.loadtest.cluster import Cluster
from kuda.loadtest.pool import Pool
from kuda.loadtest.scenarios import SCENARIOS, Options, Run

DESCRIPTION = """\
Load-test running Kuda instances: many sockets from several client processes, events through
the real REST API, and an accounting of every delivery (lost, duplicated, out of order).

Scenarios:
  idle    N authenticated sockets, each subscribed to its user channel, held --duration s with
          the server's heartbeats: server RSS per socket, sockets still alive at the end
  hot     N sockets on one channel (ride:{id}, or the live `rides` board with --channel rides);
          with --events E, E events published back to back through REST (--publishers calls
          in flight): deliveries/s; then --rate events/s for --duration s: latency
  many    --channels ride chats with --members members each (one socket per member), chat
          messages posted through REST at --rate/s over all of them
  churn   connect, subscribe, close, again, from --concurrency loops for --duration s
  resume  N clients on N different ride channels on instance 0; instance 0 is restarted,
          --missed events per channel are committed meanwhile, every client reconnects with
          `since` (needs --spawn 2 or more)
  rest    --concurrency closed-loop virtual users over a mix of search, ride, booking and chat
          routes for --duration s

Servers: --url (repeatable) for running instances (set WRITE_RATE_PER_USER=0 and a high
SOCKETS_PER_USER on them), or --spawn N to start N `kuda serve` on DATABASE_URL and REDIS_URL
(--fresh-db: a throwaway database). Server CPU and RSS are read from /proc when the instances
run on this host (found by their listening port, or --server-pid).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kuda loadtest",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--url", action="append", default=[], help="an instance's base URL (repeat)")
    p.add_argument(
        "--server-pid", action="append", type=int, default=[], help="a server process id (repeat)"
    )
    p.add_argument("--spawn", type=int, default=0, help="start this many instances")
    p.add_argument("--fresh-db", action="store_true", help="with --spawn: a throwaway database")
    p.add_argument("--server-env", action="append", default=[], metavar="K=V", help="with --spawn")
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--users", type=int, default=20, help="accounts to register")
    p.add_argument("--duration", type=float, default=None, help="seconds (idle: 60, others: 10)")
    p.add_argument("--rate", type=float, default=50.0, help="events/s (hot, many); 0 = flat out")
    p.add_argument("--publishers", type=int, default=8, help="REST publish calls in flight")
    p.add_argument("--channels", type=int, default=1000, help="many: ride chats")
    p.add_argument("--members", type=int, default=2, help="many: sockets per chat")
    p.add_argument("--channel", choices=("ride", "rides"), default="ride", help="hot: the channel")
    p.add_argument("--concurrency", type=int, default=32, help="churn, rest: loops in all")
    p.add_argument("--missed", type=int, default=1, help="resume: events per channel while away")
    p.add_argument("--rides", type=int, default=200, help="rest: rides to create")
    p.add_argument(
        "--events", type=int, default=0, help="hot: first publish this many back to back"
    )
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=16,
        help="handshakes + subscribes in flight, all client processes together",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--no-progress", action="store_true")
    return p


def options(args: argparse.Namespace) -> Options:
    duration = (
        args.duration if args.duration is not None else (60.0 if args.scenario == "idle" else 10.0)
    )
    return Options(
        scenario=args.scenario,
        sockets=args.sockets,
        procs=args.procs,
        users=args.users,
        duration=duration,
        rate=args.rate,
        publishers=args.publishers,
        channels=args.channels,
        members=args.members,
        channel=args.channel,
        concurrency=args.concurrency,
        missed=args.missed,
        rides=args.rides,
        events=args.events,
        connect_concurrency=args.connect_concurrency,
        progress=not args.no_progress,
    )


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    # Stop in order (servers, database, keys) on any of these. SIGINT too: left to asyncio's
    # runner, it waits for uvloop's next wake-up (a loop asleep for 30 s took it 30 s late).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    if bool(args.url) == bool(args.spawn):
        raise SystemExit("kuda loadtest: give either --url (one or more) or --spawn N")
    extra = dict(kv.split("=", 1) for kv in args.server_env)
    if args.spawn:
        cluster = await Cluster.spawn(args.spawn, args.fresh_db, extra)
    else:
        cluster = Cluster.existing(args.url, list(args.server_pid))
    opts = options(args)
    pool = Pool(max(1, args.procs))
    try:
        await pool.start()
        async with api.client() as http:
            r = Run(opts, cluster, pool, http)
            if not cluster.pids:
                r.summary.notes.append("server processes not found on this host: no server CPU/RSS")
            r.progress.start()
            try:
                await SCENARIOS[opts.scenario](r)
            finally:
                await r.progress.stop()
        print(r.summary.table())
        if args.json is not None:
            args.json.write_text(json.dumps(r.summary.json(), indent=2, default=str))
        d = r.summary.data
        keys = ("lost", "duplicated", "out_of_order", "connect_failed", "subscribe_failed")
        bad = any(d.get(k) for k in keys)
        return 1 if bad else 0
    finally:
        await pool.stop()
        await cluster.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    code = 130
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        code = runner(run(args))
    sys.exit(code)
