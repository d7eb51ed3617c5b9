"""Resume storm: clients of a stopped instance reconnect to the other one and resume with `since`.

    .venv/bin/python bench/resume.py [--clients 2000] [--missed 50]

Two `kuda serve` processes (A, B) on one fresh database and the shared Redis (own prefix). N picows
clients, all one user, subscribe to `user:<id>` on A and receive 10 events. A gets SIGTERM (its
sockets are closed 1012); while the clients are away, --missed events are committed through B.
Then every client reconnects to B and subscribes with `since` = the last seq it holds. Reported:
time from the first reconnect until every client has replayed exactly the missed events, in
order, and received its `subscribed` ack (`recovered: true`); then one live event must reach all.
Stops by itself and removes its database."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from asgi_lifespan import LifespanManager
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from channels import append
from server.app import create_app
from server.config import Settings
from server.migrate import upgrade
from tests.procs import Server, kuda_env

ADMIN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-" + "r" * 40


class Client(WSListener):
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.acked: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.want = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            if not self.closed.done():
                self.closed.set_result(frame.get_close_code())
        elif frame.msg_type == WSMsgType.TEXT:
            msg = orjson.loads(frame.get_payload_as_bytes())
            if msg["type"] == "event":
                self.seqs.append(msg["seq"])
                if len(self.seqs) >= self.want and self.acked.done() and not self.done.done():
                    self.done.set_result(None)
            elif msg["type"] == "subscribed" and not self.acked.done():
                self.acked.set_result(msg)
                if len(self.seqs) >= self.want and not self.done.done():
                    self.done.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(0)


async def connect(
    url: str, token: str, channel: str, since: int | None, want: int
) -> tuple[WSTransport, Client]:
    transport, client = await ws_connect(
        Client, url, extra_headers={"Authorization": f"Bearer {token}"}
    )
    client.want = want
    frame: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = since
    transport.send(WSMsgType.TEXT, orjson.dumps(frame))
    return transport, client


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def write(writer: Any, channel: str, n: int) -> None:
    async with writer.state.sessionmaker() as session:
        for i in range(n):
            await append(session, channel, "bench.event", {"i": i})
            await session.commit()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--missed", type=int, default=50)
    args = parser.parse_args()
    name = f"kuda_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"kuda-bench-{name}:"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    servers: list[Server] = []
    try:
        await asyncio.to_thread(upgrade, url)
        env = kuda_env(DATABASE_URL=url, REDIS_URL=REDIS, REDIS_PREFIX=prefix, JWT_SECRET=SECRET,
                       LOG_LEVEL="warning", WS_OPS_PER_S="1000", ACCESS_TOKEN_TTL_S="3600",
                       SOCKETS_PER_USER="0", WRITE_RATE_PER_USER="0",
                       PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024")  # fmt: skip
        tmp = Path(tempfile.gettempdir())
        a, b = Server(env, tmp / f"{name}-a.log"), Server(env, tmp / f"{name}-b.log")
        servers += [a, b]
        await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
        settings = Settings(
            database_url=url, redis_url=REDIS, redis_prefix=prefix, jwt_secret=SECRET
        )
        writer = create_app(settings)
        async with LifespanManager(writer), httpx.AsyncClient(base_url=b.base_url) as http:
            body = {"email": "storm@example.com", "password": "password-1", "display_name": "S"}
            uid = (await http.post("/api/v1/auth/register", json=body)).json()["id"]
            login = {"username": body["email"], "password": body["password"]}
            token = (await http.post("/api/v1/auth/token", data=login)).json()["access_token"]
            channel = f"user:{uid}"
            ws_a, ws_b = (f"ws://127.0.0.1:{s.port}/ws" for s in (a, b))
            clients = [await connect(ws_a, token, channel, None, 10) for _ in range(args.clients)]
            await asyncio.gather(*(c.acked for _, c in clients))
            await write(writer, channel, 10)
            await asyncio.wait_for(asyncio.gather(*(c.done for _, c in clients)), 60)
            print(f"{args.clients} clients on A hold seqs 1..10")
            await asyncio.to_thread(a.stop)
            codes = await asyncio.wait_for(asyncio.gather(*(c.closed for _, c in clients)), 60)
            print(f"A stopped (SIGTERM): close codes {sorted(set(codes))}")
            await write(writer, channel, args.missed)
            started = time.perf_counter()
            done_at: list[float] = []

            async def resume(last: int) -> Client:
                _, client = await connect(ws_b, token, channel, last, args.missed)
                await client.done
                done_at.append(time.perf_counter() - started)
                return client

            resumed = await asyncio.wait_for(
                asyncio.gather(*(resume(c.seqs[-1]) for _, c in clients)), 120
            )
            elapsed = time.perf_counter() - started
            want = list(range(11, 11 + args.missed))
            exact = sum(c.seqs == want and c.acked.result()["recovered"] for c in resumed)
            print(
                f"resumed on B: {exact}/{args.clients} clients got exactly seqs "
                f"11..{10 + args.missed}"
                f" then `subscribed` (recovered); all within {elapsed:.2f} s"
                f" (per client p50 {pct(done_at, 0.5):.2f} s, p99 {pct(done_at, 0.99):.2f} s)"
            )
            for c in resumed:
                c.want += 1
                c.done = asyncio.get_running_loop().create_future()
            await write(writer, channel, 1)
            await asyncio.wait_for(asyncio.gather(*(c.done for c in resumed)), 60)
            print(f"then live: all {args.clients} got seq {11 + args.missed}")
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
