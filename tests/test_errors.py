"""One error shape everywhere: unknown routes, validation, bodies too large, unexpected errors."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from tests.helpers import assert_error, new_email


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nowhere"), 404, "not_found")
    assert_error(await client.delete("/healthz"), 405, "method_not_allowed")


async def test_malformed_json_is_422_with_location(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        content=b'{"email": "a@b.co", "password": ',
        headers={"content-type": "application/json"},
    )
    error = assert_error(r, 422, "validation_error")
    assert error["details"][0]["type"] == "json_invalid"


async def test_wrong_types_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": new_email(), "password": 12345678, "display_name": ["x"]},
    )
    error = assert_error(r, 422, "validation_error")
    assert {d["field"] for d in error["details"]} == {"body.password", "body.display_name"}
    non_object = await client.post("/api/v1/auth/register", json=[1, 2])
    assert_error(non_object, 422, "validation_error")


async def test_body_over_one_mib_is_413(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (1024 * 1024) + b"}"
    r = await client.post(
        "/api/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    error = assert_error(r, 413, "too_large")
    assert error["details"] == {"max_bytes": 1024 * 1024}


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b" " * (64 * 1024)

    r = await client.post(
        "/api/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "too_large")


async def test_body_at_limit_is_parsed(client: httpx.AsyncClient) -> None:
    body = b'{"email": "x"}' + b" " * (1024 * 1024 - 14)
    r = await client.post(
        "/api/v1/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "validation_error")  # parsed, refused for its fields, not its size


async def test_unexpected_error_is_generic_500_with_logged_request_id(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/boom", boom)
    with caplog.at_level(logging.ERROR, logger="kuda.errors"):
        r = await client.get("/boom", headers={"X-Request-ID": "req-abc-123"})
    error = assert_error(r, 500, "internal_error")
    assert error["message"] == "Internal server error" and "hunter2" not in r.text
    assert error["details"] == {"request_id": "req-abc-123"}
    assert any("req-abc-123" in rec.getMessage() for rec in caplog.records)


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"X-Request-ID": "<script>" * 20})
    assert hostile.headers["x-request-id"] != "<script>" * 20
