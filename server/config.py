"""The only place settings are read. Every factory takes a `Settings` argument."""

from __future__ import annotations

import json
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from channels.brokers.topology import RedisMode, RedisTopology, TopologyError

MIN_SECRET_BYTES = 32
_PLACEHOLDER_SECRETS = {"changeme", "changethis", "secret", "please-change-me"}


class ConfigError(RuntimeError):
    """Settings that cannot run: the message says what to change."""


class TaxiService(BaseModel):
    name: str
    phone: str
    url: str


class Settings(BaseSettings):
    """Kuda's configuration, from environment variables (and `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset = embedded PostgreSQL in DATA_DIR"
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL(s); unset = in-process broker. Comma-separated seeds/sentinels",
    )
    redis_mode: RedisMode = Field(default="single", description="single | cluster | sentinel")
    redis_sentinel_service: str = "mymaster"
    redis_prefix: str = "kuda:"
    jwt_secret: SecretStr | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_accepted_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default=[], description="also accepted to verify tokens (rotation), never used to sign"
    )
    access_token_ttl_s: int = Field(default=900, ge=1)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    ws_ticket_ttl_s: int = Field(default=30, ge=1, le=60)
    allowed_origins: Annotated[list[str], NoDecode] = []
    data_dir: Path = Path(".kuda")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve /metrics here only, not on the API port"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token required by /metrics on the API port"
    )
    drain_s: float = Field(
        default=10.0, ge=0, le=3600, description="SIGTERM: close sockets (1012) over this window"
    )
    drain_min_rate: float = Field(
        default=100.0, ge=0, description="...but never fewer sockets closed per second than this"
    )
    otel_tracing: bool = Field(
        default=False, description="OpenTelemetry spans per request (the `otel` extra)"
    )
    max_body_bytes: int = 1024 * 1024
    login_failures_per_email: int = 10
    login_failure_window_s: int = 15 * 60
    auth_requests_per_ip: int = 300
    auth_ip_window_s: int = 60
    password_hash_time_cost: int = Field(default=2, ge=1)
    password_hash_memory_kib: int = Field(default=19456, ge=1024)
    heartbeat_s: int = Field(default=25, ge=1, le=300)
    ws_max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_max_buffer_bytes: int = Field(default=1024 * 1024, ge=4096)
    ws_raw_writer: bool = Field(
        default=True, description="fan-out fast path; false = stock uvicorn send (comparison)"
    )
    listen_backlog: int = Field(
        default=8192,
        ge=64,
        description="connections the kernel queues before accept (capped by net.core.somaxconn)",
    )
    ws_ops_per_s: float = Field(default=20.0, gt=0)
    ws_ops_burst: int = Field(default=40, ge=1)
    event_retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    relay_interval_s: float = Field(default=1.0, gt=0)
    resync_interval_s: float = Field(default=5.0, gt=0)
    instance_heartbeat_s: float = Field(
        default=1.0, gt=0, description="how often an instance renews its liveness in Redis"
    )
    instance_ttl_s: float = Field(
        default=5.0,
        gt=0,
        description="an instance silent this long is dead: its sockets and presence are removed",
    )
    taxi_services: list[TaxiService] = []
    require_verified_drivers: bool = False
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    replay_cache_bytes: int = Field(
        default=32 * 1024 * 1024, ge=0, description="encoded replay ranges kept per instance"
    )
    db_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="longest wait for a pooled connection, then 503"
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="longest wait to open a connection, then 503"
    )
    db_statement_timeout_s: float = Field(
        default=10.0, gt=0, description="PostgreSQL cancels a statement that runs longer"
    )
    db_command_timeout_s: float = Field(
        default=12.0, gt=0, description="longest wait for any answer (a stalled server), then 503"
    )
    # Sessions and per-user limits (PROTOCOL.md section 6; docs/decisions.md D26, D27).
    device_token_ttl_s: int = Field(default=180 * 24 * 3600, ge=60)
    session_sync_s: float = Field(default=1.0, gt=0, le=60)
    session_stale_s: float = Field(default=10.0, gt=0)
    write_rate_per_user: int = Field(default=120, ge=0)
    sockets_per_user: int = Field(default=20, ge=0)
    seats_held_per_user: int = Field(default=16, ge=0)
    ride_start_early_s: int = Field(default=24 * 3600, ge=0)
    ride_start_late_s: int = Field(default=6 * 3600, ge=0)
    redis_max_connections: int = Field(default=64, ge=1)
    redis_socket_timeout_s: float = Field(default=2.0, gt=0)
    # PostgreSQL at scale (docs/scaling.md, docs/decisions.md D39).
    database_read_url: str | None = Field(
        default=None,
        description="a streaming replica for lag-tolerant reads (search, replay); unset = primary",
    )
    db_replica_retry_s: float = Field(
        default=5.0, gt=0, description="after a replica failure, reads use the primary this long"
    )
    database_pgbouncer: bool = Field(
        default=False,
        description="the URLs go through PgBouncer in transaction mode: no prepared-statement "
        "cache, unique statement names, every statement inside a transaction",
    )
    # Background jobs: reminders, auto-completion, housekeeping (server/jobs/; docs/decisions.md
    # D35). Every instance runs them; the work is claimed in PostgreSQL, so each piece is done once.
    jobs_enabled: bool = Field(
        default=True, description="run the background jobs in this instance (false: never)"
    )
    jobs_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="how often each instance looks for due work"
    )
    jobs_batch: int = Field(
        default=100, ge=1, le=10000, description="rides or rows claimed per job transaction"
    )
    jobs_housekeeping_s: float = Field(
        default=60.0, gt=0, description="how often each instance runs the housekeeping jobs"
    )
    reminder_lead_s: int = Field(
        default=3600, ge=0, description="`ride.reminder` this long before departure (0: never)"
    )
    ride_autocomplete_s: int = Field(
        default=21600, ge=0, description="complete rides still open this long after departure"
    )
    notification_retention_s: int = Field(
        default=0, ge=0, description="read notifications older than this are deleted (0: kept)"
    )

    @field_validator("jwt_accepted_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _no_none_alg(cls, value: list[str]) -> list[str]:
        if not value or any(alg.lower() == "none" for alg in value):
            raise ValueError("JWT_ALGORITHMS must name real algorithms (never 'none')")
        return value

    @model_validator(mode="after")
    def _redis_topology_valid(self) -> Settings:
        _ = self.redis_topology  # a bad REDIS_URL / REDIS_MODE fails at startup, not later
        return self

    @cached_property
    def redis_topology(self) -> RedisTopology | None:
        """Where Redis is (one server, a cluster, or Sentinel); None without REDIS_URL."""
        if not self.redis_url:
            return None
        try:
            return RedisTopology.parse(self.redis_url, self.redis_mode, self.redis_sentinel_service)
        except TopologyError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _ttl_outlives_heartbeat(self) -> Settings:
        if self.instance_ttl_s < 2 * self.instance_heartbeat_s:
            raise ValueError("INSTANCE_TTL_S must be at least twice INSTANCE_HEARTBEAT_S")
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @cached_property
    def async_database_url(self) -> str:
        """The SQLAlchemy URL with the asyncpg driver, whatever scheme was given."""
        if self.database_url is None:
            raise ConfigError("DATABASE_URL is not set (embedded database not started)")
        return to_asyncpg_url(self.database_url)

    @cached_property
    def async_read_url(self) -> str | None:
        """DATABASE_READ_URL with the asyncpg driver; None when reads share the primary."""
        return to_asyncpg_url(self.database_read_url) if self.database_read_url else None

    def accepted_keys(self) -> list[str]:
        """`JWT_ACCEPTED_SECRETS`, each held to the same rules as `JWT_SECRET`."""
        keys = [secret.get_secret_value() for secret in self.jwt_accepted_secrets]
        for key in keys:
            if key.lower() in _PLACEHOLDER_SECRETS or len(key) < MIN_SECRET_BYTES:
                raise ConfigError(
                    "a JWT_ACCEPTED_SECRETS entry is a placeholder or shorter than "
                    f"{MIN_SECRET_BYTES} characters"
                )
        return keys

    def signing_key(self) -> str:
        """The JWT key; refuses to run with a missing, placeholder or short secret."""
        if self.jwt_secret is None:
            raise ConfigError(
                "JWT_SECRET is not set. With an external DATABASE_URL Kuda will not invent "
                "a signing key (tokens would break across instances and restarts): set "
                f"JWT_SECRET to at least {MIN_SECRET_BYTES} random characters, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        value = self.jwt_secret.get_secret_value()
        if value.lower() in _PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET is a placeholder or shorter than {MIN_SECRET_BYTES} characters"
            )
        return value


def to_asyncpg_url(url: str) -> str:
    """The SQLAlchemy asyncpg URL. libpq's `sslmode=` (what operators write) becomes asyncpg's
    `ssl=` (SQLAlchemy passes query parameters to `asyncpg.connect`, which has no `sslmode`)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            base, sep, query = rest.partition("?")
            if sep:
                params = [
                    "ssl=" + p[len("sslmode=") :] if p.startswith("sslmode=") else p
                    for p in query.split("&")
                ]
                rest = base + "?" + "&".join(params)
            return "postgresql+asyncpg://" + rest
    raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://")


def embedded_jwt_secret(data_dir: Path) -> str:
    """The embedded mode's signing key: generated once, kept in DATA_DIR (mode 0600)."""
    path = data_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return value
