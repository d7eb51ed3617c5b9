import { Backoff } from "./backoff.js";
import { Channel } from "./channel.js";
import { memoryCursorStore } from "./cursors.js";
import { Emitter, reportError } from "./emitter.js";
import { KudaError } from "./errors.js";
import { tokenLifetime } from "./jwt.js";

const DEFAULTS = {
  auth: "subprotocol",
  backoffBaseMs: 500,
  backoffMaxMs: 20000,
  stableAfterMs: 10000,
  restartJitterMs: 2000,
  rateLimitedMinMs: 4000,
  connectTimeoutMs: 15000,
  sendTimeoutMs: 30000,
  refreshRatio: 0.8,
  unsubscribeGraceMs: 1000,
  opsPerSecond: 15,
  opsBurst: 30,
  tickMs: 1000,
  watchEnvironment: true,
};

const SYSTEM_CLOCK = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

const OPEN = 1;

/**
 * The Kuda realtime client. One socket, many channels; see docs/clients.md.
 *
 * Connection states: "disconnected" (initial, and between attempts) -> "connecting" ->
 * "connected"; "closed" is final until `connect()` is called again. The terminal `unauthorized`
 * outcome (getToken failed or returned nothing, or the rejected token again) is the "closed" state
 * with `info.reason === "unauthorized"`, plus an "unauthorized" event.
 */
export class Kuda {
  /** @param {import("./index.js").KudaOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== "string") throw new TypeError("Kuda: `url` is required");
    if (typeof options.getToken !== "function") throw new TypeError("Kuda: `getToken` is required");
    this._options = { ...DEFAULTS, ...options };
    const base = options.url.replace(/\/+$/, "");
    if (!/^https?:\/\//i.test(base)) throw new TypeError("Kuda: `url` is the HTTP base, http(s)://host[:port]");
    this.url = base;
    this._wsUrl = base.replace(/^http/i, "ws") + "/ws";
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._clock = options.clock ?? SYSTEM_CLOCK;
    this._random = options.random ?? Math.random;
    this._cursors = options.cursorStore ?? memoryCursorStore();
    this._backoff = new Backoff({
      baseMs: this._options.backoffBaseMs,
      maxMs: this._options.backoffMaxMs,
      random: this._random,
    });
    this._events = new Emitter();
    /** @type {Map<string, Channel>} */
    this._channels = new Map();
    /** Requests waiting for a reply, by op id. */
    this._pending = new Map();
    this._nextId = 1;
    this.state = "disconnected";
    this.info = { previous: "disconnected" };
    this.welcome = undefined;
    this._ws = undefined;
    this._socketSerial = 0;
    this._running = false;
    this._connectWaiters = [];
    this._retryTimer = undefined;
    this._tickTimer = undefined;
    this._connectTimer = undefined;
    this._pumpTimer = undefined;
    this._queue = [];
    this._opTokens = this._options.opsBurst;
    this._opRefillAt = 0;
    this._tokenPromise = undefined;
    this._token = undefined;
    this._tokenExpMs = undefined;
    this._refreshAtMs = undefined;
    this._refreshing = false;
    this._lastFrameAt = 0;
    this._lastPingAt = 0;
    this._connectedAt = 0;
    this._envCleanup = undefined;
    this._timers = new Set();
    this._holdUntil = 0;
    this._releaseConnect = undefined;
  }

  // ---------------------------------------------------------------- public surface

  /** `kuda.on("state", (state, info) => ...)`; returns a function that removes the listener. */
  on(event, listener) {
    return this._events.on(event, listener);
  }

  off(event, listener) {
    this._events.off(event, listener);
  }

  /** Connects (and keeps reconnecting); resolves on the server's `welcome`. */
  connect() {
    if (this.state === "connected") return Promise.resolve(this.welcome);
    const promise = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (!this._running) {
      this._running = true;
      this._watchEnvironment();
      void this._open();
    }
    return promise;
  }

  /** Closes the socket with 1000 and stops reconnecting; pending sends are rejected. */
  close() {
    if (!this._running && this.state === "closed") return;
    this._stop(new KudaError("closed", "The client was closed"), { code: 1000, reason: "client closed" });
  }

  /**
   * Subscribe a listener to a channel. The listener gets the server's event frames (each durable
   * seq once, in order; ephemeral events as they come) and `{type: "reset", channel, seq}` when
   * events were lost for good and the app must refetch.
   * @returns {import("./index.js").Subscription}
   */
  subscribe(channel, listener, options = {}) {
    if (typeof channel !== "string" || !channel) throw new TypeError("subscribe: channel must be a non-empty string");
    if (typeof listener !== "function") throw new TypeError("subscribe: listener must be a function");
    if (options.since != null && !(Number.isSafeInteger(options.since) && options.since >= 0)) {
      throw new TypeError("subscribe: since must be an integer >= 0");
    }
    let ch = this._channels.get(channel);
    const isNew = !ch || ch.terminal;
    if (isNew) {
      ch = new Channel(this, channel);
      this._channels.set(channel, ch);
    }
    const entry = {
      listener,
      since: options.since ?? undefined,
      after: undefined,
      onState: options.onState,
      onReset: options.onReset,
    };
    ch.add(entry);
    if (isNew) void this._startChannel(ch);
    const chan = ch;
    return {
      channel,
      get state() {
        return entry.closed ? "unsubscribed" : chan.state;
      },
      get info() {
        return chan.info;
      },
      get seq() {
        return entry.after;
      },
      unsubscribe() {
        if (entry.closed) return;
        chan.remove(entry);
        if (entry.onState) entry.onState("unsubscribed", { previous: chan.state });
      },
    };
  }

  /** Sends a chat message; resolves with the ack's data (the stored message). */
  send(channel, body, options = {}) {
    const clientId = options.clientId ?? randomId();
    return this._request(
      { op: "send", channel, body, client_id: clientId },
      { retry: true, timeoutMs: options.timeoutMs ?? this._options.sendTimeoutMs, pick: (f) => f.data },
    );
  }

  /** The users with a live subscription to a chat channel (the `presence` op). */
  presence(channel, options = {}) {
    return this._request(
      { op: "presence", channel },
      { retry: true, timeoutMs: options.timeoutMs ?? this._options.sendTimeoutMs, pick: (f) => f.users },
    );
  }

  /** Tells the other members of a chat that this user is typing (dropped when not connected). */
  typing(channel) {
    if (this.state === "connected") this._write({ op: "typing", channel });
  }

  /**
   * Follows who is present on a chat channel: a snapshot (the `presence` op) after every
   * (re)subscription, then `presence.joined` / `presence.left`. `listener` gets the sorted user ids.
   */
  watchPresence(channel, listener) {
    let users = new Set();
    let closed = false;
    let snapshotSerial = 0;
    const emit = () => !closed && listener([...users].sort((a, b) => a - b));
    const snapshot = () => {
      const serial = ++snapshotSerial;
      this.presence(channel).then(
        (list) => {
          if (closed || serial !== snapshotSerial || !Array.isArray(list)) return;
          users = new Set(list);
          emit();
        },
        () => {},
      );
    };
    const sub = this.subscribe(
      channel,
      (frame) => {
        if (frame.type !== "event" || !frame.data) return;
        if (frame.event === "presence.joined") users.add(frame.data.user_id);
        else if (frame.event === "presence.left") users.delete(frame.data.user_id);
        else return;
        emit();
      },
      { onState: (state) => state === "subscribed" && snapshot() },
    );
    if (sub.state === "subscribed") snapshot();
    return {
      unsubscribe() {
        closed = true;
        sub.unsubscribe();
      },
    };
  }

  /** Wakes the client: reconnect now if waiting, check liveness if connected (apps call it on foreground). */
  reconnectNow() {
    if (!this._running) return;
    if (this._ws && this.state === "connected") {
      this._tick(true);
    } else if (!this._ws && this._retryTimer !== undefined && !(this._holdUntil > this._clock.now())) {
      this._clock.clearTimeout(this._retryTimer);
      this._retryTimer = undefined;
      void this._open();
    }
  }

  // ---------------------------------------------------------------- REST helpers

  /**
   * A REST call under `/api/v1` with the current access token; one retry with a fresh token on 401.
   * Resolves with the parsed JSON (undefined for 204); rejects with a KudaError.
   */
  async request(method, path, body, options = {}) {
    if (!this._fetch) throw new KudaError("unsupported", "No fetch in this runtime: pass `fetch`");
    const url = this.url + "/api/v1" + (path.startsWith("/") ? path : "/" + path);
    let token401;
    for (let attempt = 0; ; attempt += 1) {
      const token = attempt === 0 ? await this._currentToken() : await this._freshToken("expired", token401);
      const headers = { Authorization: `Bearer ${token}`, ...(options.headers ?? {}) };
      const init = { method, headers };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await this._fetch(url, init);
      } catch (err) {
        throw new KudaError("network", `${method} ${path}: ${err?.message ?? err}`);
      }
      if (response.status === 401 && attempt === 0) {
        token401 = token;
        continue;
      }
      if (response.status === 204) return undefined;
      const text = await response.text();
      let data;
      try {
        data = text ? JSON.parse(text) : undefined;
      } catch {
        data = undefined;
      }
      if (!response.ok) {
        const error = data?.error ?? {};
        const retryAfter = Number(response.headers?.get?.("Retry-After"));
        throw new KudaError(error.code ?? `http_${response.status}`, error.message ?? `${method} ${path}: HTTP ${response.status}`, {
          status: response.status,
          details: error.details,
          retryAfterS: Number.isFinite(retryAfter) ? retryAfter : undefined,
        });
      }
      return data;
    }
  }

  /** One page of a channel's durable events (`GET /api/v1/channels/{channel}/events`). */
  fetchEvents(channel, { since = 0, limit = 100 } = {}) {
    return this.request("GET", `/channels/${encodeURIComponent(channel)}/events?since=${since}&limit=${limit}`);
  }

  /** A single-use WebSocket ticket (`POST /api/v1/auth/ws-ticket`). */
  async wsTicket() {
    const body = await this.request("POST", "/auth/ws-ticket");
    return body.ticket;
  }

  // ---------------------------------------------------------------- connection lifecycle

  _setState(state, details = {}) {
    const info = { previous: this.state, ...details };
    if (this.state === state && details.code === undefined && details.error === undefined) return;
    this.state = state;
    this.info = info;
    this._events.emit("state", state, info);
  }

  async _open() {
    if (!this._running || this._ws || this._opening) return; // never two connections
    this._opening = true;
    this._retryTimer = undefined;
    const serial = ++this._socketSerial;
    this._setState("connecting", { attempt: this._backoff.attempt });
    let token;
    let url = this._wsUrl;
    let protocols;
    try {
      const refused = this._rejectedToken;
      token = await this._freshToken(refused !== undefined ? "expired" : "connect", refused);
      if (serial !== this._socketSerial || !this._running) return;
      const lifetime = tokenLifetime(token);
      if (lifetime && lifetime.expMs <= this._clock.now()) {
        // Expired while offline: ask once more before spending a handshake on it.
        token = await this._freshToken("expired");
        if (serial !== this._socketSerial || !this._running) return;
      }
      if (this._rejectedToken !== undefined && token === this._rejectedToken) {
        throw new KudaError("unauthorized", "getToken returned the token the server just rejected");
      }
      this._rejectedToken = undefined;
      if (this._options.auth === "ticket") {
        const ticket = await this.wsTicket();
        if (serial !== this._socketSerial || !this._running) return;
        url += `?ticket=${encodeURIComponent(ticket)}`;
        protocols = ["kuda.v1"];
      } else {
        protocols = ["kuda.v1", `kuda.bearer.${token}`];
      }
    } catch (err) {
      if (serial !== this._socketSerial || !this._running) return; // a newer attempt owns _opening
      this._opening = false;
      if (isFatalTokenError(err)) {
        this._unauthorized(err);
      } else {
        this._retry(this._backoff.next(), { reason: `connect failed: ${err?.message ?? err}`, error: err });
      }
      return;
    }
    const WS = this._WebSocket;
    if (typeof WS !== "function") {
      this._opening = false;
      this._stop(new KudaError("unsupported", "No WebSocket in this runtime: pass the `WebSocket` option"), {
        reason: "no WebSocket",
      });
      return;
    }
    let ws;
    try {
      ws = new WS(url, protocols);
    } catch (err) {
      this._opening = false;
      this._retry(this._backoff.next(), { reason: `WebSocket failed: ${err?.message ?? err}`, error: err });
      return;
    }
    this._opening = false;
    this._ws = ws;
    this._socketToken = token;
    this._welcomed = false;
    let opened = false;
    let refusedStatus;
    ws.onopen = () => {
      opened = true;
      this._lastFrameAt = this._clock.now();
    };
    ws.onmessage = (message) => {
      if (this._ws === ws) this._onMessage(message.data);
    };
    ws.onclose = (event) => {
      if (this._ws === ws) this._onClose(event.code ?? 1006, event.reason ?? "", opened ? undefined : refusedStatus);
    };
    ws.onerror = (event) => {
      // A close event follows (a socket that errs without one is caught by the connect timeout or
      // the liveness check). Before the upgrade, Node's `ws` and React Native say which HTTP status
      // refused the handshake ("Unexpected server response: 401"); browsers never do.
      if (!opened) refusedStatus = handshakeStatus(event);
    };
    this._connectTimer = this._clock.setTimeout(() => {
      this._connectTimer = undefined;
      if (this._ws === ws && !this._welcomed) this._abandon(4000, "no welcome in time");
    }, this._options.connectTimeoutMs);
  }

  _onMessage(data) {
    const now = this._clock.now();
    this._lastFrameAt = now;
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "welcome":
        this._onWelcome(frame);
        return;
      case "event": {
        const ch = this._channels.get(frame.channel);
        if (ch && !ch.terminal) ch.onEvent(frame);
        this._events.emit("event", frame);
        return;
      }
      case "unsubscribed": {
        const pending = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
        if (pending) {
          this._settle(frame.id, frame);
          return;
        }
        const ch = this._channels.get(frame.channel);
        if (ch && !ch.terminal && frame.reason) {
          ch.end("revoked", frame.reason, `access to ${frame.channel} was revoked`);
          this._channels.delete(frame.channel);
        }
        return;
      }
      case "error":
        if (frame.id !== undefined && this._pending.has(frame.id)) this._settle(frame.id, frame);
        else this._events.emit("error", new KudaError(frame.code ?? "error", frame.message ?? "server error"));
        return;
      default:
        if (frame.id !== undefined && this._pending.has(frame.id)) this._settle(frame.id, frame);
    }
  }

  _onWelcome(frame) {
    if (this._welcomed) return;
    this._welcomed = true;
    this._clearTimer("_connectTimer");
    const now = this._clock.now();
    this.welcome = frame;
    this._connectedAt = now;
    this._lastPingAt = now;
    this._heartbeatMs = Math.max(1000, (Number(frame.heartbeat_s) || 25) * 1000);
    this._opTokens = this._options.opsBurst;
    this._opRefillAt = now;
    this._planRefresh(this._socketToken, frame.expires_at);
    this._setState("connected", { connectionId: frame.connection_id });
    const subscribing = [];
    for (const ch of [...this._channels.values()]) {
      if (ch.entries.size === 0) {
        this._clock.clearTimeout(ch.graceTimer);
        this._dropChannel(ch); // let go during the grace period: nothing to resubscribe
      } else if (!ch.terminal) {
        subscribing.push(this._subscribeChannel(ch));
      }
    }
    for (const [id, pending] of this._pending) {
      if (pending.retry) this._write({ ...pending.frame, id });
    }
    this._scheduleTick();
    this._events.emit("welcome", frame);
    // connect() resolves with the welcome once the server answered the subscriptions made before
    // it (at most a few seconds later): an app that acts after `await connect()` (posts, books)
    // gets the events of what it did, also on channels subscribed without `since`.
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    if (waiters.length === 0) return;
    let cap;
    const release = () => {
      if (this._releaseConnect === release) this._releaseConnect = undefined;
      if (cap !== undefined) {
        this._clock.clearTimeout(cap);
        this._timers.delete(cap);
      }
      for (const waiter of waiters.splice(0)) waiter.resolve(frame);
    };
    if (subscribing.length === 0) return release();
    this._releaseConnect = release; // also when this socket closes first (welcome did come)
    cap = this._later(release, Math.min(5000, this._options.connectTimeoutMs));
    Promise.all(subscribing.map((p) => p?.catch(noop))).then(release);
  }

  _onClose(code, reason, status) {
    const wasConnected = this._welcomed;
    const stable = wasConnected && this._clock.now() - this._connectedAt >= this._options.stableAfterMs;
    this._detach(code, reason);
    if (!this._running) return;
    if (stable) this._backoff.reset();
    if (code === 1000) {
      this._stop(new KudaError("closed", `The server closed the connection: ${reason || 1000}`), { code, reason });
      return;
    }
    const details = status === undefined ? { code, reason } : { code, reason: reason || `handshake refused: HTTP ${status}`, status };
    let delay;
    // In ticket mode a handshake refused 401 is about the ticket (used, or too old), which a REST
    // call made with the token just before: the next ticket request tells whether the token is.
    if (code === 4401 || (status === 401 && this._options.auth !== "ticket")) {
      // Token expired or session ended: ask getToken once (shared) and come back at once. The
      // same token again means the app has nothing fresher: unauthorized (see _open).
      this._rejectedToken = this._socketToken;
      this._token = undefined;
      delay = wasConnected && stable ? 0 : this._backoff.next();
    } else if (code === 4429 || status === 429) {
      // Rate limited, too slow, or too many sockets: back off for longer ("equal jitter" over at
      // least rateLimitedMinMs); waking up (online, visible) does not cut this wait short.
      const ceiling = Math.max(this._options.rateLimitedMinMs, this._backoff.ceiling());
      this._backoff.attempt += 1;
      delay = Math.floor(ceiling / 2 + (this._random() * ceiling) / 2);
      this._holdUntil = this._clock.now() + delay;
    } else if (code === 1012) {
      // The instance restarts: come back within a jittered moment, spread with everyone else.
      const ceiling = Math.max(this._options.restartJitterMs, this._backoff.ceiling());
      this._backoff.attempt += 1;
      delay = Math.floor(this._random() * ceiling);
    } else {
      delay = this._backoff.next();
    }
    this._retry(delay, details);
  }

  _retry(delay, details) {
    this._clearTimer("_retryTimer");
    this._setState("disconnected", { ...details, delayMs: delay });
    this._retryTimer = this._clock.setTimeout(() => {
      this._retryTimer = undefined;
      void this._open();
    }, delay);
  }

  /** Drop the current socket (dead, or no welcome): close it without waiting, then reconnect. */
  _abandon(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    // Close it before anything else can open the next one (never two connections): `ws` can
    // drop the TCP connection at once; browsers abort a handshake, or start the close handshake.
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(4000, reason.slice(0, 100));
    } catch {
      // already closing
    }
    this._onClose(code === 4000 ? 1006 : code, reason);
  }

  /** Forget the socket; channels go back to pending; per-socket requests are dropped. */
  _detach(code, reason) {
    this._releaseConnect?.();
    const ws = this._ws;
    this._ws = undefined;
    this._welcomed = false;
    this._opening = false;
    this._clearTimer("_connectTimer");
    this._clearTimer("_tickTimer");
    this._clearTimer("_pumpTimer");
    this._queue = [];
    this._refreshing = false;
    if (ws) {
      ws.onmessage = noop;
      ws.onclose = noop;
      ws.onopen = noop;
      ws.onerror = noop; // keep one: `ws` throws on an 'error' nobody listens to
    }
    for (const [id, pending] of this._pending) {
      if (!pending.retry) {
        this._pending.delete(id);
        pending.onClose?.();
      }
    }
    for (const ch of this._channels.values()) ch.socketClosed(code, reason);
  }

  _stop(error, details) {
    const ws = this._ws;
    this._running = false;
    this._socketSerial += 1;
    this._detach(details.code, details.reason);
    this._clearTimer("_retryTimer");
    for (const id of this._timers) this._clock.clearTimeout(id);
    this._timers.clear();
    if (ws) {
      try {
        ws.close(1000, "");
      } catch {
        // already closed
      }
    }
    this._envCleanup?.();
    this._envCleanup = undefined;
    for (const ch of [...this._channels.values()]) {
      if (ch.entries.size === 0) {
        this._clock.clearTimeout(ch.graceTimer);
        this._dropChannel(ch); // in its grace period: nothing left to keep
      }
    }
    for (const [id, pending] of this._pending) {
      this._pending.delete(id);
      this._clock.clearTimeout(pending.timer);
      pending.reject(error);
    }
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
    this._setState("closed", { ...details, error: error.code === "closed" ? undefined : error });
  }

  _unauthorized(err) {
    const error = err instanceof KudaError ? err : new KudaError("unauthorized", `getToken failed: ${err?.message ?? err}`, { cause: err });
    const code = this._rejectedToken !== undefined ? 4401 : undefined;
    this._stop(error, { code, reason: "unauthorized" });
    this._events.emit("unauthorized", error);
  }

  _watchEnvironment() {
    if (!this._options.watchEnvironment) return;
    const target = this._options.environment ?? globalThis;
    const doc = this._options.document ?? globalThis.document;
    const cleanups = [];
    const wake = () => this.reconnectNow();
    if (typeof target?.addEventListener === "function") {
      target.addEventListener("online", wake);
      cleanups.push(() => target.removeEventListener("online", wake));
    }
    if (typeof doc?.addEventListener === "function") {
      const visible = () => doc.visibilityState === "visible" && wake();
      doc.addEventListener("visibilitychange", visible);
      cleanups.push(() => doc.removeEventListener("visibilitychange", visible));
    }
    this._envCleanup = () => cleanups.forEach((fn) => fn());
  }

  // ---------------------------------------------------------------- liveness and token refresh

  _scheduleTick() {
    this._clearTimer("_tickTimer");
    this._tickTimer = this._clock.setTimeout(() => {
      this._tickTimer = undefined;
      this._tick(false);
      if (this._ws && this._welcomed) this._scheduleTick();
    }, this._options.tickMs);
  }

  /** Wall-clock checks (timers may fire late in background tabs; the clock does not lie). */
  _tick(woken) {
    if (!this._ws || !this._welcomed) return;
    const now = this._clock.now();
    const idle = now - this._lastFrameAt;
    const pingAfter = this._options.pingAfterMs ?? this._heartbeatMs / 2;
    const deadAfter = this._options.deadAfterMs ?? pingAfter + this._heartbeatMs;
    if (idle >= deadAfter) {
      this._abandon(1006, `no frame for ${Math.round(idle / 1000)} s`);
      return;
    }
    const sincePing = now - this._lastPingAt;
    if (woken && sincePing >= 1000) {
      // Back online, or the page visible again: the socket may have died meanwhile (a new network,
      // a laptop that slept). A pong within max(5 s, pingAfter) proves it alive; else reconnect.
      this._lastPingAt = now;
      const ws = this._ws;
      const verdictMs = Math.min(deadAfter, Math.max(5000, pingAfter));
      this._request({ op: "ping" }, { retry: false, timeoutMs: verdictMs }).catch((err) => {
        if (err?.code === "timeout" && this._ws === ws && this._lastFrameAt <= now) {
          this._abandon(1006, `no pong within ${Math.round(verdictMs / 1000)} s of waking`);
        }
      });
    } else if (!woken && idle >= pingAfter && sincePing >= pingAfter) {
      this._lastPingAt = now;
      void this._request({ op: "ping" }, { retry: false, timeoutMs: deadAfter }).catch(noop);
    }
    if (this._refreshAtMs !== undefined && now >= this._refreshAtMs) void this._refresh();
  }

  _planRefresh(token, expiresAt) {
    const now = this._clock.now();
    const lifetime = tokenLifetime(token);
    const welcomeExp = expiresAt ? Date.parse(expiresAt) : NaN;
    let expMs = lifetime?.expMs;
    if (Number.isFinite(welcomeExp) && (expMs === undefined || welcomeExp < expMs)) expMs = welcomeExp;
    if (expMs === undefined) {
      this._refreshAtMs = undefined;
      return;
    }
    const issued = lifetime?.iatMs !== undefined && lifetime.iatMs <= now ? lifetime.iatMs : now;
    const span = Math.max(0, expMs - issued);
    this._tokenExpMs = expMs;
    // The server just accepted this token. If by this device's clock it is already due (or even
    // expired), either it is an old token near its end (refresh soon, before it expires) or the
    // clock runs ahead of the server's: then never refresh more often than every
    // (1 - refreshRatio) / 2 of the lifetime, instead of at every tick.
    const lifetimeMs = lifetime?.iatMs !== undefined ? lifetime.expMs - lifetime.iatMs : span;
    const spacing = Math.max(1000, (lifetimeMs * (1 - this._options.refreshRatio)) / 2);
    const floor = now + (expMs > now ? Math.max(Math.min(spacing, (expMs - now) / 2), 1000) : spacing);
    this._refreshAtMs = Math.max(issued + span * this._options.refreshRatio, floor);
  }

  /** Refresh the token on the live socket with the `auth` op; one refresh in flight. */
  async _refresh() {
    if (this._refreshing || !this._ws) return;
    this._refreshing = true;
    const ws = this._ws;
    let token;
    try {
      token = await this._freshToken("refresh");
    } catch (err) {
      if (this._ws !== ws) return;
      this._refreshing = false;
      if (isFatalTokenError(err)) this._unauthorized(err);
      else this._refreshAtMs = this._clock.now() + 5000;
      return;
    }
    if (this._ws !== ws) return;
    if (token === this._socketToken) {
      // getToken has nothing newer yet: ask again in a little while (the server closes 4401 at expiry).
      this._refreshing = false;
      this._refreshAtMs = this._clock.now() + 5000;
      return;
    }
    try {
      const reply = await this._request({ op: "auth", token }, { retry: false, timeoutMs: 15000 });
      if (this._ws !== ws) return;
      this._socketToken = token;
      this._planRefresh(token, reply.expires_at);
      this._events.emit("authed", reply);
    } catch {
      if (this._ws === ws) this._refreshAtMs = this._clock.now() + 5000;
    } finally {
      if (this._ws === ws) this._refreshing = false;
    }
  }

  /**
   * getToken, one call shared by every waiter. `refused`: the token the server just refused; a
   * call already in flight for another reason (a REST call, a connection) may hand it back from a
   * cache, and then getToken is asked once more, told the token expired.
   */
  _freshToken(reason, refused) {
    const inflight = this._tokenPromise;
    if (inflight && reason === "expired" && inflight.reason !== "expired" && refused !== undefined) {
      return inflight.then((token) => (token === refused ? this._freshToken("expired") : token));
    }
    if (!this._tokenPromise) {
      this._tokenPromise = Promise.resolve()
        .then(() => this._options.getToken({ reason }))
        .then(
          (token) => {
            this._tokenPromise = undefined;
            if (typeof token !== "string" || token === "") {
              throw new KudaError("unauthorized", "getToken returned no token");
            }
            this._token = token;
            return token;
          },
          (err) => {
            this._tokenPromise = undefined;
            throw err;
          },
        );
      this._tokenPromise.reason = reason;
    }
    return this._tokenPromise;
  }

  /** The last token while it is still valid, else a fresh one (REST calls). */
  _currentToken() {
    const token = this._token;
    if (token) {
      const lifetime = tokenLifetime(token);
      if (!lifetime || lifetime.expMs - this._clock.now() > 5000) return Promise.resolve(token);
    }
    return this._freshToken("rest");
  }

  // ---------------------------------------------------------------- channels

  async _startChannel(ch) {
    await ch.load();
    if (this._channels.get(ch.name) === ch && this.state === "connected" && ch.state === "pending" && ch.entries.size > 0) {
      void this._subscribeChannel(ch);
    }
  }

  async _subscribeChannel(ch) {
    await ch.load();
    if (!this._welcomed || this._channels.get(ch.name) !== ch || ch.terminal) return;
    if (ch.state !== "pending") return;
    const ws = this._ws;
    const frame = ch.subscribeFrame();
    const generation = ch.generation;
    return this._request(frame, { retry: false }).then(
      (reply) => {
        ch.retries = 0;
        if (ch.generation === generation) ch.onSubscribed(reply);
      },
      (err) => {
        if (this._ws !== ws || ch.generation !== generation || !err || !err.code) return;
        if (err.code === "conflict") {
          // Already subscribed on this socket (a retry): start over with `since`.
          this._write({ op: "unsubscribe", channel: ch.name });
          ch.socketClosed(undefined, "resubscribing");
          void this._subscribeChannel(ch);
        } else if (isTransient(err)) {
          // The server failed on its side (or we were too fast): try again on this socket.
          ch.socketClosed(undefined, err.message);
          ch.retries = (ch.retries ?? 0) + 1;
          const ceiling = Math.min(this._options.backoffMaxMs, 1000 * 2 ** Math.min(ch.retries, 5));
          this._later(() => {
            if (this._ws === ws) void this._subscribeChannel(ch);
          }, Math.floor(ceiling / 2 + (this._random() * ceiling) / 2));
        } else {
          ch.end("failed", err.code, err.message);
          if (this._channels.get(ch.name) === ch) this._channels.delete(ch.name);
        }
      },
    );
  }

  _dropChannel(ch) {
    if (this._channels.get(ch.name) !== ch) return;
    this._channels.delete(ch.name);
    ch.terminal = true;
    ch.generation += 1;
    if (this.state === "connected" && (ch.state === "subscribed" || ch.state === "subscribing" || ch.state === "recovering")) {
      this._write({ op: "unsubscribe", channel: ch.name });
    }
    ch.state = "unsubscribed";
  }

  /** How many channels the registry holds, and how many listeners (for tests and diagnostics). */
  stats() {
    let listeners = 0;
    for (const ch of this._channels.values()) listeners += ch.entries.size;
    return { channels: this._channels.size, listeners, pending: this._pending.size };
  }

  // ---------------------------------------------------------------- requests and the outgoing queue

  _request(frame, { retry, timeoutMs, pick } = {}) {
    if (!this._running && retry) {
      return Promise.reject(new KudaError("closed", "The client is not connected: call connect() first"));
    }
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const pending = {
        frame,
        retry,
        resolve: (reply) => resolve(pick ? pick(reply) : reply),
        reject,
        timer: undefined,
        onClose: () => reject(new KudaError("disconnected", "The connection closed before the reply")),
      };
      if (timeoutMs) {
        pending.timer = this._clock.setTimeout(() => {
          if (this._pending.get(id) !== pending) return;
          this._pending.delete(id);
          this._queue = this._queue.filter((f) => f.id !== id);
          reject(new KudaError("timeout", `No reply to ${frame.op} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._pending.set(id, pending);
      if (this._welcomed) this._write({ ...frame, id });
    });
  }

  _settle(id, reply) {
    const pending = this._pending.get(id);
    if (!pending) return;
    this._pending.delete(id);
    this._clock.clearTimeout(pending.timer);
    if (reply.type === "error") {
      pending.reject(new KudaError(reply.code ?? "error", reply.message ?? "error"));
    } else {
      pending.resolve(reply);
    }
  }

  /** Queue a frame; sent at no more than the server's op rate (a refused op has no id to tell). */
  _write(frame) {
    this._queue.push(frame);
    this._pump();
  }

  _pump() {
    const ws = this._ws;
    if (!ws || this._pumpTimer !== undefined) return;
    const now = this._clock.now();
    const { opsPerSecond, opsBurst } = this._options;
    this._opTokens = Math.min(opsBurst, this._opTokens + ((now - this._opRefillAt) / 1000) * opsPerSecond);
    this._opRefillAt = now;
    while (this._queue.length > 0 && this._opTokens >= 1) {
      if (ws.readyState !== OPEN) return;
      const frame = this._queue.shift();
      this._opTokens -= 1;
      try {
        ws.send(JSON.stringify(frame));
      } catch (err) {
        reportError(err);
      }
    }
    if (this._queue.length > 0) {
      const wait = Math.ceil(((1 - this._opTokens) / opsPerSecond) * 1000);
      this._pumpTimer = this._clock.setTimeout(() => {
        this._pumpTimer = undefined;
        this._pump();
      }, wait);
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => this._later(resolve, ms));
  }

  /** A timer that close() cancels (retries and pauses that belong to the running client). */
  _later(fn, ms) {
    const id = this._clock.setTimeout(() => {
      this._timers.delete(id);
      fn();
    }, ms);
    this._timers.add(id);
    return id;
  }

  _clearTimer(name) {
    if (this[name] !== undefined) {
      this._clock.clearTimeout(this[name]);
      this[name] = undefined;
    }
  }
}

function noop() {}

/** Errors worth another try: the server's own failures (`internal_error`; version 1.0 servers
 * answered `bad_request` "Could not process op"), rate limiting, a lost reply. */
function isTransient(err) {
  if (["rate_limited", "internal_error", "timeout"].includes(err.code)) return true;
  return err.code === "bad_request" && /^Could not process/.test(err.message);
}

/**
 * Whether a getToken failure ends the session (`unauthorized`) or is worth another try later: an
 * error marked `retry: true` (or `false`) says so itself; otherwise a network failure (fetch's
 * TypeError), a timeout, or a server answering 5xx/429 is transient, and anything else is final.
 */
function isFatalTokenError(err) {
  if (err && typeof err.retry === "boolean") return !err.retry;
  if (err instanceof TypeError) return false;
  if (err && ["network", "timeout", "unavailable", "rate_limited", "internal_error"].includes(err.code)) return false;
  const status = Number(err?.status);
  if (status >= 500 || status === 429) return false;
  return true;
}

/** The HTTP status that refused a handshake, where the runtime's error event tells it. */
function handshakeStatus(event) {
  const text = String(event?.message ?? event?.error?.message ?? "");
  const match = /\b(?:response|code|was)\b[^0-9]{0,20}([1-5]\d\d)\b/i.exec(text);
  return match ? Number(match[1]) : undefined;
}

function randomId() {
  const crypto = globalThis.crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
