"""`rediss://` end to end against a test-owned redis-server that only speaks TLS, with a CA and
a server certificate made by the test: two instances fan events out through it, and a client
that does not trust the CA is refused."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.domain.conftest import make_ride
from tests.helpers import signup
from tests.live import LiveServer, ws_connect
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def _cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kuda test CA")])
    ca = _cert("kuda test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    ca_file = _pem(tmp_path / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    cert_file = _pem(tmp_path / "redis.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_file = _pem(
        tmp_path / "redis.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    server = RedisServer(workdir=tmp_path)
    # TLS only: the plain port is off, the TLS port is the server's port.
    server.extra = (
        "--tls-port", str(server.port), "--port", "0",
        "--tls-cert-file", cert_file, "--tls-key-file", key_file,
        "--tls-ca-cert-file", ca_file, "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    yield server, ca_file
    server.kill()


async def test_rediss_url_carries_events_between_instances(
    tls_redis: tuple[RedisServer, str], live_factory: Callable[..., Any], redis_prefix: str
) -> None:
    server, ca_file = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca_file}"

    untrusting = Redis.from_url(f"rediss://127.0.0.1:{server.port}/0")  # system CAs only
    with pytest.raises(RedisConnectionError):
        await untrusting.ping()
    await untrusting.aclose()
    plain = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")  # no TLS: refused
    with pytest.raises(RedisConnectionError):
        await plain.ping()
    await plain.aclose()

    a: LiveServer = await live_factory(redis_url=url, redis_prefix=redis_prefix)
    b: LiveServer = await live_factory(redis_url=url, redis_prefix=redis_prefix)
    async with (
        httpx.AsyncClient(base_url=a.http) as http_a,
        httpx.AsyncClient(base_url=b.http) as http_b,
    ):
        for http in (http_a, http_b):
            body = (await http.get("/readyz")).json()
            assert body["dependencies"]["broker"]["status"] == "ok", body
        driver = await signup(http_a)
        ride = await make_ride(http_a, driver)
        async with ws_connect(b.ws_url, driver.access_token) as ws:
            await ws.expect("welcome")
            reply = await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}"})
            assert reply["type"] == "subscribed"
            patched = await http_a.patch(
                f"/api/v1/rides/{ride['id']}", json={"notes": "tls"}, headers=driver.headers
            )
            assert patched.status_code == 200
            event = await ws.recv(timeout=10)
            assert event["type"] == "event" and event["event"] == "ride.updated", event
