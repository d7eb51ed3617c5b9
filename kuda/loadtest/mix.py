"""The `rest` scenario's clients: closed-loop virtual users over a weighted mix of routes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from kuda.loadtest.accounting import Histogram
from kuda.loadtest.api import PLACES

DEFAULT_WEIGHTS = {
    "search": 40,  # origin prefix + destination
    "list": 10,  # default listing
    "ride": 15,  # GET /rides/{id}
    "me": 5,  # GET /users/me
    "book": 10,  # POST a booking, then cancel it (two writes)
    "chat_post": 10,  # the driver posts in the ride's chat
    "chat_read": 10,  # the driver reads the chat
}


class Mix:
    def __init__(self, req: dict[str, Any], http: httpx.AsyncClient) -> None:
        self.http = http
        self.bases: list[str] = req["bases"]
        self.users: list[dict[str, Any]] = req["users"]
        self.rides: list[dict[str, Any]] = req["rides"]
        weights: dict[str, int] = req.get("weights") or DEFAULT_WEIGHTS
        self.ops = [op for op, w in weights.items() if w > 0]
        self.weights = [weights[op] for op in self.ops]
        self.latency: dict[str, Histogram] = {}
        self.status: dict[str, Counter[str]] = {}
        self.example = ""
        self.table: dict[str, Callable[[], Awaitable[None]]] = {
            "search": self.search,
            "list": self.list,
            "ride": self.ride,
            "me": self.me,
            "book": self.book,
            "chat_post": self.chat_post,
            "chat_read": self.chat_read,
        }

    def _base(self) -> str:
        return random.choice(self.bases)

    def _headers(self, user: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {user['token']}"}

    async def call(
        self, op: str, method: str, path: str, user: dict[str, Any], **kw: Any
    ) -> httpx.Response | None:
        t0 = time.monotonic()
        try:
            r = await self.http.request(
                method, self._base() + path, headers=self._headers(user), **kw
            )
        except httpx.HTTPError as exc:
            self.status.setdefault(op, Counter())["exception"] += 1
            self.example = self.example or f"{op}: {exc!r}"
            return None
        self.latency.setdefault(op, Histogram()).record(time.monotonic() - t0)
        self.status.setdefault(op, Counter())[f"{r.status_code // 100}xx"] += 1
        if r.status_code >= 500 or (r.status_code >= 400 and r.status_code != 409):
            self.example = self.example or f"{op}: {r.status_code} {r.text[:200]}"
        return r

    async def search(self) -> None:
        origin, destination = random.sample(PLACES, 2)
        params = {"origin": origin[:5].lower(), "destination": destination}
        await self.call("search", "GET", "/api/v1/rides", random.choice(self.users), params=params)

    async def list(self) -> None:
        await self.call("list", "GET", "/api/v1/rides", random.choice(self.users))

    async def ride(self) -> None:
        ride = random.choice(self.rides)
        await self.call("ride", "GET", f"/api/v1/rides/{ride['id']}", random.choice(self.users))

    async def me(self) -> None:
        await self.call("me", "GET", "/api/v1/users/me", random.choice(self.users))

    async def book(self) -> None:
        ride = random.choice(self.rides)
        user = random.choice([u for u in self.users if u["id"] != ride["driver"]])
        path = f"/api/v1/rides/{ride['id']}/bookings"
        r = await self.call("book", "POST", path, user, json={"seats": 1})
        if r is not None and r.status_code == 201:
            booking = r.json()["id"]
            await self.call("cancel", "POST", f"/api/v1/bookings/{booking}/cancel", user)

    def _driver(self, ride: dict[str, Any]) -> dict[str, Any]:
        return next(u for u in self.users if u["id"] == ride["driver"])

    async def chat_post(self) -> None:
        ride = random.choice(self.rides)
        path = f"/api/v1/rides/{ride['id']}/messages"
        await self.call("chat_post", "POST", path, self._driver(ride), json={"body": "on my way"})

    async def chat_read(self) -> None:
        ride = random.choice(self.rides)
        path = f"/api/v1/rides/{ride['id']}/messages"
        await self.call("chat_read", "GET", path, self._driver(ride), params={"limit": 20})

    async def loop(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            op = random.choices(self.ops, self.weights)[0]
            await self.table[op]()


async def run(req: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(req["concurrency"])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        mix = Mix(req, http)
        deadline = time.monotonic() + float(req["seconds"])
        await asyncio.gather(*(mix.loop(deadline) for _ in range(concurrency)))
    return {
        "latency": {op: h.to_dict() for op, h in mix.latency.items()},
        "status": {op: dict(c) for op, c in mix.status.items()},
        "example": mix.example,
    }
