// A fake clock and a fake Kuda server (WebSocket + fetch) for the state machine and timing tests:
// every timer of the client runs on the fake clock, so the tests say "30 s later" and check what the
// client did, without waiting and without depending on the machine's load.

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Let pending promise chains run. */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i += 1) await tick();
}

export class FakeClock {
  constructor(start = Date.UTC(2026, 10, 25, 12, 0, 0)) {
    this.time = start;
    this.timers = new Map();
    this.serial = 0;
    this.now = () => this.time;
    this.setTimeout = (fn, ms) => {
      const id = ++this.serial;
      this.timers.set(id, { at: this.time + Math.max(0, ms ?? 0), fn, id });
      return id;
    };
    this.clearTimeout = (id) => void this.timers.delete(id);
  }

  /** Move the clock forward, running each timer that falls due, in order. */
  async advance(ms) {
    const end = this.time + ms;
    await settle();
    for (;;) {
      let next;
      for (const timer of this.timers.values()) {
        if (timer.at <= end && (!next || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) next = timer;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.time = Math.max(this.time, next.at);
      next.fn();
      await settle();
    }
    this.time = end;
    await settle();
  }

  /** Jump the wall clock without running timers (a laptop lid closed, a throttled tab). */
  jump(ms) {
    this.time += ms;
  }
}

/** A JWT-shaped token (unsigned: the client only reads `exp`/`iat`). */
export function fakeToken(clock, lifetimeS = 900, extra = {}) {
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const iat = Math.floor(clock.now() / 1000);
  return `${enc({ alg: "HS256", typ: "JWT" })}.${enc({ sub: "42", type: "access", iat, exp: iat + lifetimeS, ...extra })}.sig`;
}

export class FakeSocket {
  constructor(server, url, protocols) {
    this.server = server;
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedByClient = undefined;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    const frame = JSON.parse(data);
    this.sent.push(frame);
    this.server.onFrame?.(this, frame);
  }

  close(code = 1005, reason = "") {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  // ---- server side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** open + welcome */
  accept(welcome = {}) {
    this.open();
    this.push({ type: "welcome", connection_id: `c${this.server.sockets.indexOf(this)}`, user_id: 42, protocol: 1, heartbeat_s: 25, expires_at: new Date(this.server.clock.now() + 900000).toISOString(), ...welcome });
  }

  /** The handshake is refused; with an HTTP status, the error event says it as Node's `ws` does. */
  refuse(status) {
    this.readyState = 3;
    this.onerror?.(status ? { type: "error", message: `Unexpected server response: ${status}` } : {});
    this.onclose?.({ code: 1006, reason: "" });
  }

  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The frames the client sent with this op. */
  ops(op) {
    return this.sent.filter((f) => f.op === op);
  }

  get open_() {
    return this.readyState === 1;
  }
}

export class FakeServer {
  constructor(clock) {
    this.clock = clock;
    this.sockets = [];
    /** channel -> durable event frames, seq 1..n */
    this.logs = new Map();
    this.fetches = [];
    this.retention = 0; // events with seq <= retention are trimmed (REST says recovered:false)
    const server = this;
    /** The most sockets open or connecting at once, seen when each new one is made. */
    this.maxAtOnce = 0;
    this.WebSocket = class extends FakeSocket {
      constructor(url, protocols) {
        super(server, url, protocols);
        server.sockets.push(this);
        server.maxAtOnce = Math.max(server.maxAtOnce, server.live().length);
      }
    };
    this.fetch = async (url, init = {}) => this.handleFetch(url, init);
  }

  get last() {
    return this.sockets[this.sockets.length - 1];
  }

  /** Open sockets (readyState 1 or 0 and not closed by the client). */
  live() {
    return this.sockets.filter((s) => s.readyState < 2);
  }

  event(channel, seq, extra = {}) {
    return { type: "event", channel, seq, event: "message.created", data: { id: seq }, at: new Date(this.clock.now()).toISOString(), ...extra };
  }

  /** Append n durable events to a channel's log; returns them. */
  append(channel, n = 1) {
    const log = this.logs.get(channel) ?? [];
    this.logs.set(channel, log);
    const out = [];
    for (let i = 0; i < n; i += 1) {
      const frame = this.event(channel, log.length + 1);
      log.push(frame);
      out.push(frame);
    }
    return out;
  }

  head(channel) {
    return this.logs.get(channel)?.length ?? 0;
  }

  async handleFetch(url, init) {
    const u = new URL(url);
    this.fetches.push({ url: u, init });
    const json = (status, body) => ({
      ok: status >= 200 && status < 300,
      status,
      headers: { get: () => null },
      text: async () => JSON.stringify(body),
    });
    if (this.fetchFails) return Promise.reject(new TypeError("fetch failed"));
    const m = u.pathname.match(/^\/api\/v1\/channels\/([^/]+)\/events$/);
    if (m) {
      const channel = decodeURIComponent(m[1]);
      const since = Number(u.searchParams.get("since") ?? 0);
      const limit = Number(u.searchParams.get("limit") ?? 100);
      const log = this.logs.get(channel) ?? [];
      const latest = log.length;
      const recovered = since >= this.retention && since <= latest;
      const start = Math.max(since, this.retention);
      const items = since > latest ? [] : log.slice(start, start + limit);
      const lastItem = items.length ? items[items.length - 1].seq : since;
      return json(200, { items, latest_seq: latest, recovered, next_since: items.length && lastItem < latest ? lastItem : null });
    }
    if (u.pathname === "/api/v1/auth/ws-ticket") return json(200, { ticket: `t${this.fetches.length}`, expires_in: 30 });
    return json(404, { error: { code: "not_found", message: "no route" } });
  }
}
