"""The REST calls the load tool makes: provisioning through the real API, and publishing."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

PASSWORD = "loadtest-password-42"  # noqa: S105 (throwaway accounts the tool creates)
PLACES = ("Innopolis", "Kazan", "Kazan Airport", "Kazan Railway Station", "Verkhniy Uslon")


class ApiError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def client(concurrency: int = 64) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(timeout=60, limits=limits)


def check(response: httpx.Response, *ok: int) -> Any:
    if response.status_code not in ok:
        raise ApiError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else None


async def register(http: httpx.AsyncClient, base: str, tag: str) -> User:
    email = f"lt-{tag}-{secrets.token_hex(6)}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": f"Load {tag}"}
    created = check(await http.post(f"{base}/api/v1/auth/register", json=body), 201)
    form = {"username": email, "password": PASSWORD}
    tokens = check(await http.post(f"{base}/api/v1/auth/token", data=form), 200)
    return User(int(created["id"]), email, str(tokens["access_token"]))


async def register_many(
    http: httpx.AsyncClient, bases: list[str], n: int, concurrency: int = 8
) -> list[User]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> User:
        async with gate:
            return await register(http, bases[i % len(bases)], str(i))

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def ride_body(i: int, **extra: Any) -> dict[str, Any]:
    origin = PLACES[i % len(PLACES)]
    destination = PLACES[(i + 1 + i // len(PLACES)) % len(PLACES)]
    if destination == origin:
        destination = PLACES[(i + 2) % len(PLACES)]
    departure = datetime.now(UTC) + timedelta(days=1, minutes=i % 10_000)
    body: dict[str, Any] = {
        "origin": origin,
        "destination": destination,
        "departure_at": departure.isoformat().replace("+00:00", "Z"),
        "seats_total": 8,
        "price": 100 + i % 400,
        "instant_booking": True,
    }
    body.update(extra)
    return body


async def create_ride(http: httpx.AsyncClient, base: str, user: User, body: dict[str, Any]) -> int:
    ride = check(await http.post(f"{base}/api/v1/rides", json=body, headers=user.headers), 201)
    return int(ride["id"])


async def patch_ride(
    http: httpx.AsyncClient, base: str, user: User, ride_id: int, notes: str
) -> None:
    url = f"{base}/api/v1/rides/{ride_id}"
    check(await http.patch(url, json={"notes": notes}, headers=user.headers), 200)


async def book(http: httpx.AsyncClient, base: str, user: User, ride_id: int, seats: int = 1) -> int:
    url = f"{base}/api/v1/rides/{ride_id}/bookings"
    booking = check(await http.post(url, json={"seats": seats}, headers=user.headers), 201)
    return int(booking["id"])


async def post_message(
    http: httpx.AsyncClient, base: str, user: User, ride_id: int, body: str
) -> None:
    url = f"{base}/api/v1/rides/{ride_id}/messages"
    check(await http.post(url, json={"body": body}, headers=user.headers), 201)


async def channel_head(http: httpx.AsyncClient, base: str, user: User, channel: str) -> int:
    url = f"{base}/api/v1/channels/{channel}/events"
    page = check(await http.get(url, params={"limit": 1}, headers=user.headers), 200)
    return int(page["latest_seq"])
