"""The `/ws` endpoint: handshake authentication, op dispatch, subscriptions with replay.

A socket's ops are handled one at a time, in order; each gets its reply (or an `error` frame)
and the socket stays open, except for abuse (op flood: 4429), binary frames (1003), frames
over the size limit (1009, enforced by the protocol layer), and credential expiry (4401).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from channels import events, logctx, protocol
from channels.authz import ChannelError, ChannelRegistry, ResolvedChannel
from channels.codes import CloseCode, ErrorCode
from channels.connection import Connection, Limits
from channels.faults import transient
from channels.hub import Hub, OutFrame, Subscription
from channels.metrics import Metrics
from channels.replay_cache import ReplayCache
from channels.roster import Roster
from channels.types import (
    Authenticate,
    AuthError,
    ConsumeTicket,
    Identity,
    JSONObject,
    Unavailable,
    iso,
)

log = logging.getLogger("kuda.gateway")

SUBPROTOCOL = "kuda.v1"
BEARER_PREFIX = "kuda.bearer."
MAX_SUBSCRIPTIONS = 256
SOCKET_LIMIT_RETRY_S = 10

PublishEphemeral = Callable[[str, str, JSONObject, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    heartbeat_s: int = 25
    allowed_origins: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    sockets_per_user: int = 0
    """Open sockets per user on every instance together (the roster counts them); 0 = off."""
    replay_cache_bytes: int = 32 * 1024 * 1024
    """Bytes of encoded replay ranges kept per instance (channels/replay_cache.py)."""
    ended_memory_s: float = 60.0
    """How long an ended session id is remembered, so a socket whose handshake was in flight
    when its session ended is closed as soon as it registers."""


UNAVAILABLE = "unavailable"
"""The REST error code of a handshake refused with 503 (never an error frame's code)."""


class Denied(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        registry: ChannelRegistry,
        hub: Hub,
        sessionmaker: async_sessionmaker[AsyncSession],
        authenticate: Authenticate,
        consume_ticket: ConsumeTicket,
        publish_ephemeral: PublishEphemeral,
        metrics: Metrics,
        roster: Roster,
    ) -> None:
        self.config = config
        self.registry = registry
        self.hub = hub
        self._sessionmaker = sessionmaker
        self._authenticate = authenticate
        self._consume_ticket = consume_ticket
        self._publish_ephemeral = publish_ephemeral
        self._metrics = metrics
        self.roster = roster
        self._tallies = metrics.tallies
        self._background: set[asyncio.Future[None]] = set()
        self._open: dict[Connection, None] = {}  # insertion-ordered: oldest sockets first
        self.refusing = False  # draining: new handshakes get 503
        self._replays = ReplayCache(config.replay_cache_bytes, metrics)
        self._by_session: dict[str, set[Connection]] = {}
        self._ended: dict[str, float] = {}  # session id -> forget after (loop time)

    # Handshake ----------------------------------------------------------------------------

    async def endpoint(self, websocket: WebSocket) -> None:
        try:
            if self.refusing:
                raise Denied(503, UNAVAILABLE, "This instance is restarting")
            identity, subprotocol = await self._handshake(websocket)
        except Denied as denied:
            await _deny(websocket, denied)
            return
        if not await self.roster.socket_opened(identity.user_id, self.config.sockets_per_user):
            retry = {"Retry-After": str(SOCKET_LIMIT_RETRY_S)}
            too_many = Denied(429, ErrorCode.RATE_LIMITED, "Too many open sockets", retry)
            await _deny(websocket, too_many)
            return
        try:
            await websocket.accept(subprotocol=subprotocol)
            headers = websocket.scope.get("headers")
            if isinstance(headers, list):
                headers.clear()  # authenticated: the request headers are no longer needed
            conn = Connection(websocket, identity, self.config.limits, self._tallies)
            conn.on_revoked = lambda channel: self._revoked(conn, channel)
            self._tallies.sockets += 1
            self._open[conn] = None
            logged = logctx.bind(connection_id=conn.id, user_id=identity.user_id)
            log.debug("socket open")
            try:
                conn.expire_at(identity)
                conn.send(
                    protocol.welcome(
                        conn.id, identity.user_id, self.config.heartbeat_s, identity.expires_at
                    )
                )
                self._track_session(conn, identity)
                await self._serve(conn)
            finally:
                self._open.pop(conn, None)
                await self._cleanup(conn)
                log.debug("socket closed")
                logctx.reset(logged)
        finally:
            await self.roster.socket_closed(identity.user_id)

    # Sessions -----------------------------------------------------------------------------

    def _track_session(self, conn: Connection, identity: Identity) -> None:
        """Remember that `conn` used a credential of `identity.session_id`; a session that
        already ended (while this handshake or `auth` was in flight) closes it at once."""
        sid = identity.session_id
        if sid is None or sid in conn.sessions:
            return
        conn.sessions = (*conn.sessions, sid)
        self._by_session.setdefault(sid, set()).add(conn)
        if sid in self._ended:
            conn.close(CloseCode.TOKEN_EXPIRED, "session ended")

    def _untrack_sessions(self, conn: Connection) -> None:
        for sid in conn.sessions:
            conns = self._by_session.get(sid)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._by_session[sid]
        conn.sessions = ()

    def end_sessions(self, session_ids: Sequence[str]) -> int:
        """Close (4401) every socket on this instance that was opened or re-authenticated
        with a credential of one of these sessions. Returns how many were closed."""
        now = asyncio.get_running_loop().time()
        self._ended = {k: t for k, t in self._ended.items() if t > now}
        closed = 0
        for sid in session_ids:
            self._ended[sid] = now + self.config.ended_memory_s
            for conn in list(self._by_session.get(sid, ())):
                if not conn.closed:
                    conn.close(CloseCode.TOKEN_EXPIRED, "session ended")
                    closed += 1
        return closed

    async def _handshake(self, websocket: WebSocket) -> tuple[Identity, str | None]:
        query = parse_qs(websocket.scope.get("query_string", b"").decode("latin-1"))
        if "token" in query or "access_token" in query:
            raise Denied(401, ErrorCode.UNAUTHORIZED, "Access tokens are not accepted in the URL")
        origin = websocket.headers.get("origin")
        allowed = self.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            raise Denied(403, ErrorCode.FORBIDDEN, "Origin not allowed")
        offered: list[str] = list(websocket.scope.get("subprotocols") or [])
        selected = SUBPROTOCOL if SUBPROTOCOL in offered else None
        try:
            return await self._identify(websocket, query, offered), selected
        except AuthError as exc:
            raise Denied(401, ErrorCode.UNAUTHORIZED, str(exc)) from exc
        except Unavailable as exc:
            raise Denied(503, UNAVAILABLE, str(exc), {"Retry-After": "1"}) from exc

    async def _identify(
        self, websocket: WebSocket, query: dict[str, list[str]], offered: list[str]
    ) -> Identity:
        header = websocket.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("Malformed Authorization header")
            return await self._authenticate(token.strip())
        for proto in offered:
            if proto.startswith(BEARER_PREFIX):
                return await self._authenticate(proto[len(BEARER_PREFIX) :])
        tickets = query.get("ticket")
        if tickets:
            return await self._consume_ticket(tickets[0])
        raise AuthError("Missing credentials")

    # Draining -----------------------------------------------------------------------------

    def open_count(self) -> int:
        return sum(1 for conn in self._open if not conn.closed)

    def restart_some(self, n: int) -> int:
        """Close up to n open sockets with 1012 (restart: reconnect elsewhere, resume)."""
        victims = [conn for conn in self._open if not conn.closed][:n]
        for conn in victims:
            conn.close(CloseCode.RESTART, "server restarting")
        return len(victims)

    # Serving ------------------------------------------------------------------------------

    async def _serve(self, conn: Connection) -> None:
        websocket = conn.websocket
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            self._tallies.frames_in += 1
            text = message.get("text")
            if text is None:
                conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                continue
            if conn.closed:
                continue
            if not conn.allow_op():
                if conn.abusive:
                    conn.close(CloseCode.RATE_LIMITED, "op rate limit")
                else:
                    conn.send(protocol.error(ErrorCode.RATE_LIMITED, "Too many ops; slow down"))
                continue
            await self._handle(conn, text)

    async def _handle(self, conn: Connection, text: str) -> None:
        client_id: protocol.ClientId = None
        try:
            op = protocol.parse(text)
            client_id = op.id
            await self._dispatch(conn, op)
        except protocol.FrameError as exc:
            conn.send(protocol.error(exc.code, exc.message, exc.client_id))
        except ChannelError as exc:
            conn.send(protocol.error(exc.code, exc.message, client_id))
        except Exception as exc:
            conn.send(protocol.error(ErrorCode.INTERNAL_ERROR, _failure(exc, conn), client_id))

    async def _dispatch(self, conn: Connection, op: protocol.Op) -> None:
        match op:
            case protocol.Ping():
                conn.send(protocol.with_id({"type": "pong"}, op.id))
            case protocol.Subscribe():
                await self._subscribe(conn, op)
            case protocol.Unsubscribe():
                await self._unsubscribe(conn, op)
            case protocol.Auth():
                await self._reauth(conn, op)
            case protocol.Send():
                await self._send(conn, op)
            case protocol.Typing():
                await self._typing(conn, op)
            case protocol.Presence():
                await self._presence(conn, op)

    async def _reauth(self, conn: Connection, op: protocol.Auth) -> None:
        try:
            identity = await self._authenticate(op.token)
        except (AuthError, Unavailable) as exc:
            raise ChannelError(ErrorCode.UNAUTHORIZED, str(exc)) from exc
        if identity.user_id != conn.user_id:
            raise ChannelError(ErrorCode.UNAUTHORIZED, "Token belongs to another user")
        conn.expire_at(identity)
        self._track_session(conn, identity)
        if conn.closed:
            return
        frame = {"type": "authed", "expires_at": iso(identity.expires_at)}
        conn.send(protocol.with_id(frame, op.id))

    # Subscriptions ------------------------------------------------------------------------

    async def _subscribe(self, conn: Connection, op: protocol.Subscribe) -> None:
        resolved = self.registry.resolve(op.channel)
        if op.channel in conn.subs:
            raise ChannelError(ErrorCode.CONFLICT, f"Already subscribed to {op.channel}")
        if len(conn.subs) >= MAX_SUBSCRIPTIONS:
            raise ChannelError(ErrorCode.BAD_REQUEST, "Too many subscriptions on this socket")
        sub = await self.hub.attach(conn, op.channel, resolved.durable)
        try:
            floor, acl, recovered, frames = await self._sync(conn, resolved, op.since, sub.state)
            if frames:
                # Paced: a replay may be larger than the socket's write bound. Live events of
                # the channel wait in the subscription's buffer meanwhile.
                sent = await conn.push_paced(
                    frames, self.config.heartbeat_s, lambda: self._replay_over(conn, sub)
                )
                self._metrics.replayed.inc(sent)
        except BaseException:
            self.hub.detach(sub)
            raise
        if sub.dropped or conn.closed:
            return
        conn.subs[op.channel] = sub
        # In the roster before the ack: a client that moves (subscribes on a new socket, then
        # drops the old one once acked) is never seen leaving, on any instance.
        joined = resolved.kind.presence and await self.roster.joined(op.channel, conn.user_id)
        seq = floor if resolved.durable else None
        conn.send(protocol.subscribed(op.channel, seq, recovered, op.id))
        self.hub.activate(sub, floor, acl)
        if joined:
            await self._publish_ephemeral(
                op.channel, "presence.joined", {"user_id": conn.user_id}, conn.user_id
            )

    def _replay_over(self, conn: Connection, sub: Subscription) -> bool:
        """Whether a paced replay should stop: the subscription was dropped (revoked), or more
        live events of the channel are waiting behind it than a socket may have queued (the
        reader is too slow for this channel: 4429, as any socket that cannot keep up)."""
        if len(sub.buffer) > self.config.limits.max_queue_frames:
            conn.too_slow()
        return sub.dropped or conn.closed

    async def _sync(
        self,
        conn: Connection,
        resolved: ResolvedChannel,
        since: int | None,
        state: events.ChannelState | None = None,
    ) -> tuple[int, int, bool, list[OutFrame]]:
        """Authorize, then find what the client missed. `state`: the channel's state, when
        the hub read it after this subscription was buffering (else it is read here).
        Returns (floor, acl, recovered, the frames to replay)."""
        if not resolved.durable:
            await self.registry.authorize(conn.user_id, resolved)
            return 0, 0, True, []
        # Read the channel's state before the rule: a revocation the rule did not see has a
        # newer acl_version, which the hub applies to this subscription. The session is closed
        # before the rule runs (the rule opens its own): a subscribe never holds two pooled
        # connections at once, so any number of concurrent subscribes cannot exhaust the pool.
        if state is None:
            async with self._sessionmaker() as session:
                state = await events.state(session, resolved.name)
        await self.registry.authorize(conn.user_id, resolved)
        if since is None:
            return state.head, state.acl, True, []
        if not events.is_recoverable(since, state):
            return state.head, state.acl, False, []
        frames = await self._replay_frames(resolved.name, since, state.head)
        if frames is None:  # trimmed since the state was read: refetch, never a silent gap
            return state.head, state.acl, False, []
        return state.head, state.acl, True, frames

    async def _replay_frames(self, channel: str, since: int, until: int) -> list[OutFrame] | None:
        """Committed events never change, so a replay range is read and encoded once for the
        many clients that resume together after a restart (an LRU bounded in bytes). None when
        the range is no longer whole (retention trimmed its start after the state was read)."""
        key = (channel, since, until)
        frames = self._replays.get(key)
        if frames is None:
            async with self._sessionmaker() as session:
                rows = await events.replay(session, channel, since, until)
            if len(rows) != until - since:  # seqs have no gaps: a whole range has them all
                return None
            frames = [OutFrame(protocol.encode(row.event.to_frame())) for row in rows]
            self._replays.put(key, frames)
        return frames

    async def _unsubscribe(self, conn: Connection, op: protocol.Unsubscribe) -> None:
        resolved = self.registry.resolve(op.channel)
        sub = conn.subs.pop(op.channel, None)
        if sub is not None:
            self.hub.detach(sub)
            if resolved.kind.presence:
                await self._left(conn, op.channel)
        conn.send(protocol.unsubscribed(op.channel, client_id=op.id))

    def _revoked(self, conn: Connection, channel: str) -> None:
        """The hub dropped a subscription (access revoked): the others see the user leave."""
        if self.registry.resolve(channel).kind.presence:
            task = asyncio.ensure_future(self._left(conn, channel))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _left(self, conn: Connection, channel: str) -> None:
        """One subscription closed: the others see the user leave once their last one, on
        every instance, has."""
        if await self.roster.left(channel, conn.user_id):
            await self._publish_ephemeral(
                channel, "presence.left", {"user_id": conn.user_id}, conn.user_id
            )

    async def _presence(self, conn: Connection, op: protocol.Presence) -> None:
        """The distinct users subscribed to a presence channel on any live instance."""
        resolved = self.registry.resolve(op.channel)
        if not resolved.kind.presence:
            raise ChannelError(ErrorCode.BAD_REQUEST, f"{op.channel} has no presence")
        if op.channel not in conn.subs:
            await self.registry.authorize(conn.user_id, resolved)
        try:
            await self.roster.sweep()  # an instance that just expired leaves first
        except Exception as exc:
            log.info("presence sweep skipped: %s", exc)
        users = await self.roster.members(op.channel)
        conn.send(protocol.presence(op.channel, users, op.id))

    # Domain hooks -------------------------------------------------------------------------

    async def _send(self, conn: Connection, op: protocol.Send) -> None:
        resolved = self.registry.resolve(op.channel)
        hook = resolved.kind.on_send
        if hook is None:
            raise ChannelError(ErrorCode.BAD_REQUEST, f"{op.channel} does not accept messages")
        data = await hook(conn.user_id, resolved, op.body, op.client_id)
        conn.send(protocol.with_id({"type": "ack", "data": data}, op.id))

    async def _typing(self, conn: Connection, op: protocol.Typing) -> None:
        resolved = self.registry.resolve(op.channel)
        if not resolved.kind.typing:
            raise ChannelError(ErrorCode.BAD_REQUEST, f"{op.channel} has no typing indicator")
        if op.channel not in conn.subs:
            await self.registry.authorize(conn.user_id, resolved)
        await self._publish_ephemeral(op.channel, "typing", {"user_id": conn.user_id}, conn.user_id)

    async def _cleanup(self, conn: Connection) -> None:
        conn.shutdown()
        conn.on_revoked = None  # break the connection <-> callback cycle now, not at GC time
        self._untrack_sessions(conn)
        self._tallies.sockets -= 1
        for channel, sub in list(conn.subs.items()):
            self.hub.detach(sub)
            try:
                if self.registry.resolve(channel).kind.presence:
                    await self._left(conn, channel)
            except Exception:
                log.debug("presence.left not sent for %s", channel, exc_info=True)
        conn.subs.clear()


def _failure(exc: Exception, conn: Connection) -> str:
    """Log a failed op; the message for the client's `internal_error` frame."""
    if transient(exc):
        log.warning("op failed on connection %s: %s %s", conn.id, type(exc).__name__, exc)
        return "The database is unavailable; retry shortly"
    log.exception("op failed on connection %s", conn.id)
    return "The server could not complete this op; retry later"


async def _deny(websocket: WebSocket, denied: Denied) -> None:
    extensions = websocket.scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        body = {"error": {"code": str(denied.code), "message": denied.message}}
        response = JSONResponse(body, status_code=denied.status, headers=denied.headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(CloseCode.POLICY)
