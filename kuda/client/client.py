"""`Client`: one socket to Kuda that reconnects, resumes and keeps every channel in order.

    async with Client("http://127.0.0.1:8000", get_token) as client:
        async for event in client.subscribe("user:42"):
            ...

Guarantees (docs/clients.md): each durable seq reaches each subscription once and in order,
across reconnects, restarts and lost instances (resubscribe with `since` = the last seq
delivered, gaps filled from the REST replay); a `reset` frame when history is gone; the token
refreshed on the live socket before it expires; reconnects with full-jitter backoff."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import WebSocketException

from kuda.client.backoff import Action, Backoff, after_close
from kuda.client.replay import Replayer, ReplayPage
from kuda.client.subscription import Subscription
from kuda.client.tokens import Token, TokenSource, parse_expiry, refresh_delay
from kuda.client.transport import Closed, HandshakeRefused, Pacer, Transport, ws_url
from kuda.client.types import (
    TERMINAL,
    ClientClosed,
    Disconnected,
    Frame,
    KudaError,
    ServerError,
    State,
    StateChange,
    TokenFn,
    Unauthorized,
)

CLIENT_TIMEOUT = 4000  # our own close when a reply never came: reconnect
TRANSIENT = (ConnectionError, TimeoutError, socket.gaierror, httpx.TransportError)
"""`get_token` failures that a retry may cure (the network, not the credentials); any other
exception, `PermissionError` included, means: sign in again."""


@dataclass
class _Channel:
    name: str
    subs: list[Subscription] = field(default_factory=list)
    acked: bool = False
    head: int | None = None
    grace: asyncio.TimerHandle | None = None

    def since(self) -> int | None:
        seqs = [s.last_seq for s in self.subs if s.last_seq is not None]
        return min(seqs) if seqs else None


class Client:
    """An asyncio client for Kuda's realtime API. `url` is the HTTP base (`http://host:port`);
    `get_token` returns a valid access token (sync or async) and is asked again for each
    connection and before the token expires."""

    def __init__(
        self,
        url: str,
        get_token: TokenFn,
        *,
        backoff: Backoff | None = None,
        refresh_ratio: float = 0.8,
        op_timeout: float = 10.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ops_per_s: float = 15.0,
        ops_burst: int = 30,
        max_buffer: int = 10_000,
        unsubscribe_grace_s: float = 0.5,
        max_auth_failures: int = 3,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._ws_url = ws_url(self.url)
        self._tokens = TokenSource(get_token)
        self._backoff = backoff or Backoff()
        self._refresh_ratio = refresh_ratio
        self._op_timeout, self._open_timeout = op_timeout, open_timeout
        self._ping_interval = ping_interval
        self._pacer = Pacer(ops_per_s, ops_burst)
        self._max_buffer = max_buffer
        self._grace_s = unsubscribe_grace_s
        self._max_auth_failures = max_auth_failures
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(base_url=self.url, timeout=op_timeout)
        self._replayer = Replayer(self._http, self._tokens)
        self._state: State = "disconnected"
        self._listeners: list[Callable[[StateChange], None]] = []
        self._change: asyncio.Future[None] | None = None
        self._channels: dict[str, _Channel] = {}
        self._transport: Transport | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._error: KudaError | None = None
        self.welcome: Frame | None = None
        self.connections = 0

    # State -----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def token_calls(self) -> int:
        """How many times `get_token` was called (one per connection and per refresh)."""
        return self._tokens.calls

    def on_state(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call `listener` on every transition; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_for(self, *states: State) -> State:
        """Wait until the connection is in one of `states` (or a terminal one)."""
        while self._state not in states and self._state not in TERMINAL:
            await self._next_change()
        return self._state

    def _set_state(self, state: State, code: int | None = None, reason: str = "") -> None:
        if self._state in TERMINAL or (state == self._state and code is None):
            return
        change = StateChange(state, self._state, code, reason)
        self._state = state
        for listener in list(self._listeners):
            listener(change)
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None

    async def _next_change(self) -> None:
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)

    # Lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> Frame:
        """Start the connection loop (once) and wait for a `welcome`; returns it. Raises
        `Unauthorized` or `ClientClosed` if the client stops instead."""
        self._raise_if_stopped()
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="kuda-client")
        await self._connected()
        assert self.welcome is not None
        return self.welcome

    async def close(self) -> None:
        """Close the socket (1000), end every subscription's iteration, stop reconnecting."""
        if self._state in TERMINAL:
            return
        self._stop("closed", ClientClosed("client closed"), end_with_error=False)
        if self._transport is not None:
            await self._transport.close(1000)
        me = asyncio.current_task()
        pending = [t for t in [self._runner, *self._tasks] if t is not None and t is not me]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _raise_if_stopped(self) -> None:
        if self._state in TERMINAL:
            raise self._error or ClientClosed("client closed")

    def _stop(self, state: State, error: KudaError, *, end_with_error: bool = True) -> None:
        self._error = error
        for channel in self._channels.values():
            if channel.grace is not None:
                channel.grace.cancel()
            for sub in channel.subs:
                sub.end(error if end_with_error else None)
        self._channels.clear()
        self._set_state(state, None, str(error))

    async def _connected(self) -> Transport:
        while True:
            self._raise_if_stopped()
            if self._state == "connected" and self._transport is not None:
                return self._transport
            if self._runner is None:
                raise KudaError("not connected: call connect() (or use `async with`) first")
            await self._next_change()

    # The connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        refused = 0
        while self._state not in TERMINAL:
            self._set_state("connecting")
            try:
                token = await self._tokens.fresh()
            except TRANSIENT as exc:  # the auth service is unreachable: try again later
                await self._pause(Action.BACKOFF, 0.0, None, f"get_token: {exc!r}")
                continue
            except Exception as exc:
                self._stop("unauthorized", Unauthorized(f"get_token failed: {exc!r}"))
                return
            try:
                transport = await Transport.open(
                    self._ws_url, token.value, self._pacer, self._open_timeout, self._ping_interval
                )
            except HandshakeRefused as exc:
                refused = refused + 1 if exc.status == 401 else 0
                if refused >= self._max_auth_failures:
                    self._stop("unauthorized", Unauthorized(str(exc)))
                    return
                action = Action.SLOW_DOWN if exc.status == 429 else Action.BACKOFF
                await self._pause(action, 0.0, None, str(exc))
                continue
            except (OSError, TimeoutError, ValueError, WebSocketException, KudaError) as exc:
                await self._pause(Action.BACKOFF, 0.0, None, repr(exc))
                continue
            refused = 0
            started = time.monotonic()
            closed = await self._session(transport, token)
            if self._state in TERMINAL:
                return
            action = after_close(closed.code)
            if action is Action.STOP:
                error = ClientClosed(f"server closed the socket ({closed.code} {closed.reason})")
                self._stop("closed", error, end_with_error=False)
                return
            await self._pause(action, time.monotonic() - started, closed.code, closed.reason)

    async def _pause(self, action: Action, lasted: float, code: int | None, reason: str) -> None:
        self._set_state("disconnected", code, reason)
        await asyncio.sleep(self._backoff.delay(action, lasted))

    async def _session(self, transport: Transport, token: Token) -> Closed:
        self._transport, self.welcome = transport, transport.welcome
        self.connections += 1
        self._set_state("connected")
        tasks = [self._spawn(self._refresher(transport, token))]
        tasks += [self._spawn(self._subscribe(transport, ch)) for ch in self._channels.values()]
        try:
            return await transport.run(self._on_frame)
        finally:
            self._transport = None
            for task in tasks:
                task.cancel()
            for channel in self._channels.values():
                channel.acked = False

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refresher(self, transport: Transport, token: Token) -> None:
        """Renew the socket's credential with the `auth` op at `refresh_ratio` of its life."""
        assert transport.welcome is not None
        expires = parse_expiry(str(transport.welcome["expires_at"]))
        while True:
            await asyncio.sleep(
                max(refresh_delay(token, expires, self._refresh_ratio, time.time()), 0.5)
            )
            try:
                fresh = await self._tokens.fresh()
            except TRANSIENT:
                token = Token(token.value, time.time())  # try again later
                continue
            except Exception as exc:
                self._stop("unauthorized", Unauthorized(f"get_token failed: {exc!r}"))
                await transport.close(1000)
                return
            try:
                reply = await transport.request({"op": "auth", "token": fresh.value}, 10.0)
            except ServerError:
                token = Token(token.value, time.time())  # refused: try again later
                continue
            new_expiry = parse_expiry(str(reply["expires_at"]))
            # The same token again (the app has not renewed it yet): ask again later.
            token = fresh if new_expiry > expires else Token(fresh.value, time.time())
            expires = max(expires, new_expiry)

    # Frames ----------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        channel = self._channels.get(str(frame.get("channel")))
        if channel is None:
            return
        if kind == "event":
            if frame.get("seq") is not None:
                channel.head = max(channel.head or 0, int(frame["seq"]))
            for sub in list(channel.subs):
                sub.offer(frame)
        elif kind == "subscribed":
            channel.acked = True
            if frame.get("seq") is not None:
                channel.head = max(channel.head or 0, int(frame["seq"]))
            for sub in list(channel.subs):
                sub.on_ack(frame)
        elif kind == "unsubscribed" and frame.get("reason"):
            # Access revoked: this channel ends for good (PROTOCOL.md section 3).
            self._drop(channel, ServerError(str(frame["reason"]), f"{channel.name}: revoked"))

    def _drop(self, channel: _Channel, error: BaseException) -> None:
        if self._channels.get(channel.name) is channel:
            del self._channels[channel.name]
        for sub in channel.subs:
            sub.end(error)
        channel.subs.clear()

    async def _subscribe(self, transport: Transport, channel: _Channel) -> None:
        op: dict[str, Any] = {"op": "subscribe", "channel": channel.name}
        for attempt in range(1, 6):
            since = channel.since()
            if since is not None:
                op["since"] = since
            try:
                await transport.request(op, self._op_timeout)
                return
            except ServerError as exc:
                if exc.code == "conflict":
                    return  # subscribed already on this socket (the ack came)
                if exc.code != "rate_limited":
                    self._drop(channel, exc)
                    return
                await asyncio.sleep(self._backoff.rng.uniform(0.5, 1.0) * attempt)
            except Disconnected:
                return  # the next connection subscribes again
            except TimeoutError:
                break
        await transport.close(CLIENT_TIMEOUT, "subscribe got no reply")

    # Subscriptions ---------------------------------------------------------------------------

    def subscribe(self, channel: str, since: int | None = None) -> Subscription:
        """Follow `channel` from `since` (the last seq you have; None = from now on).

        Iterate the result with `async for`; `await` it to wait for the server's ack (raises
        `ServerError` when refused). Subscribing to one channel twice is safe: the socket
        holds one server subscription per channel, each `Subscription` its own position."""
        sub = Subscription(self, channel, since, self._max_buffer)
        if self._state in TERMINAL:
            sub.end(self._error)
            return sub
        existing = self._channels.get(channel)
        if existing is None:
            existing = self._channels[channel] = _Channel(channel)
            existing.subs.append(sub)
            if self._transport is not None and self._state == "connected":
                self._spawn(self._subscribe(self._transport, existing))
            return sub
        if existing.grace is not None:
            existing.grace.cancel()
            existing.grace = None
        existing.subs.append(sub)
        if existing.acked:
            sub.on_ack({"type": "subscribed", "channel": channel, "seq": existing.head})
        return sub

    def release(self, sub: Subscription) -> None:
        channel = self._channels.get(sub.channel)
        if channel is None or sub not in channel.subs:
            return
        channel.subs.remove(sub)
        if not channel.subs:
            loop = asyncio.get_running_loop()
            channel.grace = loop.call_later(self._grace_s, self._unsubscribe_idle, channel)

    def _unsubscribe_idle(self, channel: _Channel) -> None:
        if channel.subs or self._channels.get(channel.name) is not channel:
            return
        del self._channels[channel.name]
        transport = self._transport
        if transport is not None and channel.acked:
            op = {"op": "unsubscribe", "channel": channel.name}
            self._spawn(_quietly(transport.request(op, self._op_timeout)))

    async def replay_page(self, channel: str, since: int, limit: int) -> ReplayPage:
        return await self._replayer.page(channel, since, limit)

    def retry_delay(self, attempt: int) -> float:
        return self._backoff.rng.uniform(0, min(self._backoff.max_s, 0.25 * 2 ** min(attempt, 8)))

    # Ops -------------------------------------------------------------------------------------

    async def send(self, channel: str, body: str, *, client_id: str | None = None) -> Frame:
        """Post a chat message; returns the stored message (the `ack`'s data). Retried across
        reconnects with the same `client_id`, so the server stores it once."""
        op = {"op": "send", "channel": channel, "body": body, "client_id": client_id}
        op["client_id"] = client_id or uuid.uuid4().hex
        data: Frame = (await self._request(op, retry=True))["data"]
        return data

    async def presence(self, channel: str) -> list[int]:
        """The distinct users subscribed to `channel` (a ride chat) on any instance."""
        reply = await self._request({"op": "presence", "channel": channel}, retry=True)
        return [int(u) for u in reply["users"]]

    async def typing(self, channel: str) -> None:
        """Tell the other members you are typing (dropped while disconnected)."""
        transport = self._transport
        if transport is not None and self._state == "connected":
            with contextlib.suppress(Disconnected):
                await transport.notify({"op": "typing", "channel": channel})

    async def ping(self) -> None:
        await self._request({"op": "ping"}, retry=False)

    async def _request(self, op: dict[str, Any], *, retry: bool) -> Frame:
        while True:
            transport = await self._connected()
            try:
                return await transport.request(op, self._op_timeout)
            except Disconnected:
                if not retry:
                    raise


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    with contextlib.suppress(KudaError, TimeoutError):
        await coro
