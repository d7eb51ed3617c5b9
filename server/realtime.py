"""Builds the realtime node from settings and plugs Kuda's auth into the gateway."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import AuthError, Identity, NodeConfig, Realtime, Unavailable
from channels.brokers import Broker, MemoryBroker, RedisBroker, RedisClusterBroker
from channels.connection import Limits
from channels.gateway import GatewayConfig
from channels.outbox import PUBLISHER_KEY
from channels.roster import MemoryRoster, RedisRoster, Roster
from server.auth.service import AuthService
from server.auth.sessions import SessionEnded, SessionStateUnknown, session_key, user_key
from server.auth.tickets import TicketStoreUnavailable
from server.auth.tokens import InvalidToken
from server.config import Settings


def create_broker(settings: Settings) -> Broker:
    topology = settings.redis_topology
    if topology is None:
        return MemoryBroker()
    if topology.mode == "cluster":
        return RedisClusterBroker(topology, settings.redis_prefix)
    return RedisBroker(topology, settings.redis_prefix)


def create_roster(settings: Settings) -> Roster:
    """Sockets and presence across instances; its own small client, with timeouts well under
    the liveness TTL so a slow Redis cannot hold a socket's handshake for long."""
    topology = settings.redis_topology
    if topology is None:
        return MemoryRoster()
    timeout = max(0.5, settings.instance_ttl_s / 4)
    client = topology.client(
        max_connections=32, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    return RedisRoster(
        client,
        settings.redis_prefix,
        heartbeat_s=settings.instance_heartbeat_s,
        ttl_s=settings.instance_ttl_s,
        owns_client=True,
    )


def node_config(settings: Settings) -> NodeConfig:
    limits = Limits(
        max_buffer_bytes=settings.ws_max_buffer_bytes,
        ops_per_s=settings.ws_ops_per_s,
        ops_burst=settings.ws_ops_burst,
    )
    gateway = GatewayConfig(
        heartbeat_s=settings.heartbeat_s,
        allowed_origins=frozenset(settings.allowed_origins),
        limits=limits,
        sockets_per_user=settings.sockets_per_user,
        replay_cache_bytes=settings.replay_cache_bytes,
    )
    return NodeConfig(
        gateway=gateway,
        retention_s=settings.event_retention_s,
        relay_interval_s=settings.relay_interval_s,
        resync_interval_s=settings.resync_interval_s,
    )


def create_realtime(
    settings: Settings,
    auth: AuthService,
    sessionmaker: async_sessionmaker[AsyncSession],
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> Realtime:
    sessions = auth.sessions

    def admit(key: str) -> None:
        """The session must not have ended (checked against this instance's mirror)."""
        try:
            sessions.check_key(key)
        except SessionStateUnknown as exc:
            raise Unavailable(exc.message) from exc
        except SessionEnded as exc:
            raise AuthError(exc.message) from exc

    async def authenticate(token: str) -> Identity:
        try:
            claims = auth.codec.decode(token, "access")
        except InvalidToken as exc:
            raise AuthError(str(exc)) from exc
        key = session_key(claims)
        admit(key)
        return Identity(claims.user_id, claims.expires_at, key)

    async def consume_ticket(ticket_id: str) -> Identity:
        try:
            ticket = await auth.tickets.take(ticket_id)
        except TicketStoreUnavailable as exc:
            raise Unavailable("Tickets cannot be checked right now; try again shortly") from exc
        if ticket is None:
            raise AuthError("Unknown, expired or already used ticket")
        if ticket.token_expires_at <= datetime.now(UTC):
            raise AuthError("The token behind this ticket has expired")
        key = ticket.session_id or user_key(ticket.user_id)
        admit(key)
        return Identity(ticket.user_id, ticket.token_expires_at, key)

    realtime = Realtime(
        node_config(settings),
        create_broker(settings),
        sessionmaker,
        authenticate,
        consume_ticket,
        read_sessionmaker=read_sessionmaker,
        roster=create_roster(settings),
    )
    # Every session the app makes hands its committed events to this node's publisher.
    sessionmaker.configure(info={PUBLISHER_KEY: realtime.publisher})
    # Ended sessions: announced to every instance through the node, which closes their sockets
    # (4401) and feeds the other instances' mirrors; those learnt by polling close locally.
    sessions.broadcast = realtime.end_sessions
    sessions.end_locally = realtime.end_sessions_locally
    realtime.on_sessions_ended = sessions.remember
    return realtime
