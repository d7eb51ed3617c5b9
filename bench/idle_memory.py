"""Idle memory per authenticated, subscribed socket on one `kuda serve` (in-process broker).

    .venv/bin/python bench/idle_memory.py [--sockets 2000] [--env NAME=VALUE ...]

Starts one `kuda serve` on a fresh database, opens --sockets picows clients from this process
(one user, `Authorization: Bearer`), subscribes each to `user:<id>`, waits 2 s and prints the
growth of the server's VmRSS divided by the sockets. Stops by itself and removes its database.
The process's open-file limit bounds --sockets (both ends run on this machine)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server import migrate
from tests import services
from tests.procs import Server, kuda_env


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Client(WSListener):
    def __init__(self) -> None:
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.TEXT and not self.subscribed.done():
            message = orjson.loads(frame.get_payload_as_bytes())
            if message["type"] == "subscribed":
                self.subscribed.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    name, url = await services.create_database("kuda_bench_mem")
    await asyncio.to_thread(migrate.upgrade, url)
    extra = dict(e.split("=", 1) for e in args.env)
    env = kuda_env(DATABASE_URL=url, JWT_SECRET=services.JWT_SECRET, LOG_LEVEL="warning",
                   WS_OPS_PER_S="1000", PASSWORD_HASH_TIME_COST="1", SOCKETS_PER_USER="0",
                   PASSWORD_HASH_MEMORY_KIB="1024", **extra)  # fmt: skip
    server = Server(env, Path(tempfile.gettempdir()) / f"{name}.log")
    try:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = {"email": "idle@example.com", "password": "password-1", "display_name": "I"}
            uid = (await http.post("/api/v1/auth/register", json=body)).json()["id"]
            login = {"username": body["email"], "password": body["password"]}
            token = (await http.post("/api/v1/auth/token", data=login)).json()["access_token"]
        await asyncio.sleep(1)
        before = rss_kib(server.proc.pid)
        subscribe = orjson.dumps({"op": "subscribe", "channel": f"user:{uid}"})
        clients = []
        for _ in range(args.sockets):
            transport, client = await ws_connect(
                Client, f"ws://127.0.0.1:{server.port}/ws",
                extra_headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            transport.send(WSMsgType.TEXT, subscribe)
            clients.append((transport, client))
        await asyncio.gather(*(c.subscribed for _, c in clients))
        await asyncio.sleep(2)
        after = rss_kib(server.proc.pid)
        per = (after - before) / args.sockets
        print(f"{extra or 'defaults'}: {args.sockets} sockets held and subscribed; server RSS "
              f"{before} -> {after} KiB: {per:.1f} KiB per socket")  # fmt: skip
        for transport, _ in clients:
            transport.disconnect()
    finally:
        await asyncio.to_thread(server.stop)
        await services.drop_database(name)


if __name__ == "__main__":
    asyncio.run(main())
