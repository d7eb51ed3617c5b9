"""The realtime node: one per app instance. Owns the broker, hub, publisher, relay and gateway,
and is the domain's entry point (register channels, append events, publish live events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import envelope, outbox
from channels.authz import ChannelRegistry, own_user_channel
from channels.brokers.base import Broker, BrokerUnavailable
from channels.faults import log_failure
from channels.gateway import Gateway, GatewayConfig
from channels.hub import Hub
from channels.metrics import Metrics
from channels.protocol import encode
from channels.publisher import Publisher
from channels.relay import Relay
from channels.roster import MemoryRoster, Roster
from channels.types import Authenticate, ConsumeTicket, Event, JSONObject, utcnow

log = logging.getLogger("kuda.realtime")

SESSIONS_CHANNEL = "\x00sessions"
"""The broker channel every node listens on for ended sessions (never a client channel: client
channel names must match a registered template)."""

SessionsEnded = Callable[[Sequence[str]], object]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    retention_s: float = 7 * 24 * 3600
    relay_interval_s: float = 1.0
    relay_grace_s: float = 2.0
    resync_interval_s: float = 5.0
    linger_s: float = 10.0


class Realtime:
    def __init__(
        self,
        config: NodeConfig,
        broker: Broker,
        sessionmaker: async_sessionmaker[AsyncSession],
        authenticate: Authenticate,
        consume_ticket: ConsumeTicket,
        read_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        roster: Roster | None = None,
    ) -> None:
        """`sessionmaker` serves the writes (publisher marks, relay); `read_sessionmaker`, if
        given (autocommit, no BEGIN/ROLLBACK round trips), the reads of subscribes and hubs.
        `roster` counts sockets and presence across instances (in-process by default)."""
        self.config = config
        reads = read_sessionmaker or sessionmaker
        self.broker = broker
        self.roster: Roster = roster or MemoryRoster()
        self.metrics = Metrics(lambda: broker.healthy)
        self.registry = ChannelRegistry()
        self.registry.register("user:{id}", own_user_channel)
        self.hub = Hub(broker, reads, self.metrics, linger_s=config.linger_s, coalesce=True)
        self.publisher = Publisher(broker, sessionmaker, self.metrics)
        self.relay = Relay(
            broker,
            sessionmaker,
            self.metrics,
            interval_s=config.relay_interval_s,
            grace_s=config.relay_grace_s,
            retention_s=config.retention_s,
        )
        self.gateway = Gateway(
            config.gateway,
            self.registry,
            self.hub,
            reads,
            authenticate,
            consume_ticket,
            self.publish_ephemeral,
            self.metrics,
            self.roster,
        )
        self._resync_task: asyncio.Task[None] | None = None
        self.on_sessions_ended: SessionsEnded | None = None
        """Called with the session ids another instance (or this one) ended through the
        broker, so the application can refuse their credentials too."""

    def bind(self, session: AsyncSession) -> AsyncSession:
        """Route a session's committed events to this node's publisher."""
        outbox.bind(session, self.publisher)
        return session

    async def start(self) -> None:
        await self.broker.start(self._on_message, self.hub.resync)
        await self.broker.subscribe(SESSIONS_CHANNEL)
        self.publisher.start()
        self.relay.start()
        await self.roster.start(self._presence_changed)
        self._resync_task = asyncio.create_task(self._resync_loop(), name="kuda-resync-loop")

    async def stop(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
        await self.roster.stop()
        await self.relay.stop()
        await self.publisher.stop()
        await self.hub.close()
        await self.broker.stop()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_interval_s)
            try:
                await self.hub.resync()
            except Exception as exc:
                log_failure(log, "periodic resync failed", exc)

    async def _presence_changed(self, channel: str, change: str, user_id: int) -> None:
        """A cluster-wide presence transition found by the roster (an expired instance's
        users leaving, or this instance's state pushed again)."""
        await self.publish_ephemeral(channel, f"presence.{change}", {"user_id": user_id}, user_id)

    def _on_message(self, channel: str, message: bytes) -> None:
        if channel != SESSIONS_CHANNEL:
            self.hub.on_message(channel, message)
            return
        try:
            env = envelope.decode(message)
        except ValueError:
            log.warning("dropping malformed sessions message")
            return
        if isinstance(env, envelope.SessionsEnded) and env.session_ids:
            self.gateway.end_sessions(env.session_ids)
            if self.on_sessions_ended is not None:
                self.on_sessions_ended(env.session_ids)

    async def end_sessions(self, session_ids: Sequence[str]) -> None:
        """Close (4401), on every instance, each socket opened or re-authenticated with a
        credential of one of these sessions. This instance's sockets close at once; the others
        hear it through the broker. If the broker is down the message is lost: the application
        must also tell the other instances another way (Kuda: they poll PostgreSQL)."""
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return
        self.end_sessions_locally(ids)
        message = envelope.sessions_ended(ids)
        try:
            # Bounded: a stalled broker must not hold the request that ended the sessions.
            await asyncio.wait_for(self.broker.publish([(SESSIONS_CHANNEL, message)]), 2.0)
        except (BrokerUnavailable, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("ended sessions not broadcast (%s); other instances poll them", reason)

    def end_sessions_locally(self, session_ids: Sequence[str]) -> int:
        """Close this instance's sockets of these sessions; returns how many."""
        return self.gateway.end_sessions(session_ids)

    async def publish_ephemeral(
        self, channel: str, event: str, data: JSONObject, exclude_user: int = 0
    ) -> None:
        """A live-only event (typing, presence, the `rides` board): never stored or replayed;
        dropped if the broker is down."""
        frame = Event(channel, event, data, utcnow()).to_frame()
        message = envelope.ephemeral(exclude_user, time.time(), encode(frame))
        try:
            await self.broker.publish([(channel, message)])
        except BrokerUnavailable as exc:
            log.info("ephemeral %s on %s dropped: %s", event, channel, exc)
