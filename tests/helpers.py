"""Small HTTP helpers shared by tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct-horse-42"


@dataclass
class Account:
    user: dict[str, Any]
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def id(self) -> int:
        return int(self.user["id"])


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def register(
    client: httpx.AsyncClient, email: str | None = None, **extra: Any
) -> httpx.Response:
    body = {"email": email or new_email(), "password": PASSWORD, "display_name": "Rider"}
    body.update(extra)
    return await client.post("/api/v1/auth/register", json=body)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": email, "password": password})


async def signup(client: httpx.AsyncClient, **extra: Any) -> Account:
    """Register and log in a fresh user."""
    email = extra.pop("email", None) or new_email()
    created = await register(client, email, **extra)
    assert created.status_code == 201, created.text
    tokens = await login(client, email)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Account(created.json(), email, body["access_token"], body["refresh_token"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape with the given status and code; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error
