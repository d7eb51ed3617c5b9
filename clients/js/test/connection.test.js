import assert from "node:assert/strict";
import { test } from "node:test";

import { Kuda } from "../src/index.js";
import { FakeClock, FakeServer, fakeToken, settle } from "./helpers/fake.js";
import { autoSubscribe, connected, fakeClient } from "./helpers/setup.js";

const names = (states) => states.map((s) => s.state);

test("connects with the kuda.v1 and bearer subprotocols to ws://host/ws and resolves on welcome", async () => {
  const ctx = fakeClient();
  const socket = await connected(ctx);
  assert.equal(socket.url, "ws://kuda.test:8000/ws");
  assert.deepEqual(socket.protocols, ["kuda.v1", `kuda.bearer.${ctx.tokens[0]}`]);
  assert.ok(!socket.url.includes(ctx.tokens[0]), "never a token in the URL");
  assert.deepEqual(names(ctx.states), ["connecting", "connected"]);
  assert.equal(ctx.kuda.state, "connected");
  assert.equal(ctx.states[1].connectionId, "c0");
  ctx.kuda.close();
  assert.equal(ctx.kuda.state, "closed");
  assert.deepEqual(socket.closedByClient, { code: 1000, reason: "" });
});

test("https bases become wss with the path kept", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const kuda = new Kuda({ url: "https://api.example.com/kuda/", getToken: async () => "t", WebSocket: server.WebSocket, clock, watchEnvironment: false });
  kuda.connect().catch(() => {});
  await settle();
  assert.equal(server.last.url, "wss://api.example.com/kuda/ws");
  kuda.close();
  assert.throws(() => new Kuda({ url: "ws://x/ws", getToken: async () => "t" }), TypeError);
});

test("a drop reconnects after a full-jitter backoff, asking getToken again; never two sockets", async () => {
  const ctx = fakeClient();
  const first = await connected(ctx);
  first.serverClose(1006, "");
  await settle();
  const drop = ctx.states.at(-1);
  assert.equal(drop.state, "disconnected");
  assert.equal(drop.code, 1006);
  assert.equal(drop.delayMs, 250, "random 0.5 x 500 ms");
  ctx.kuda.reconnectNow(); // e.g. the `online` event: at once, not after the delay
  await settle();
  assert.equal(ctx.server.sockets.length, 2);
  ctx.kuda.reconnectNow(); // already connecting: nothing more
  await ctx.clock.advance(10000);
  assert.equal(ctx.server.sockets.length, 2, "one socket at a time");
  await ctx.clock.advance(60000); // no welcome in 15 s: abandoned, and only then another
  assert.ok(ctx.server.sockets.length > 2);
  assert.equal(ctx.server.live().length, 1);
  ctx.server.last.accept();
  await settle();
  assert.equal(ctx.kuda.state, "connected");
  assert.equal(ctx.tokens.length, ctx.server.sockets.length, "getToken asked for each connection");
  assert.deepEqual(ctx.server.last.protocols, ["kuda.v1", `kuda.bearer.${ctx.tokens.at(-1)}`]);
  ctx.kuda.close();
});

test("backoff doubles up to 20 s after refused handshakes and resets only after a stable connection", async () => {
  const ctx = fakeClient({ random: () => 0.999999 });
  ctx.kuda.connect().catch(() => {});
  await settle();
  const delays = [];
  for (let i = 0; i < 8; i += 1) {
    ctx.server.last.refuse();
    await settle();
    delays.push(ctx.states.at(-1).delayMs);
    await ctx.clock.advance(ctx.states.at(-1).delayMs);
  }
  assert.deepEqual(delays, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999]);
  // A short-lived connection does not reset the ladder...
  ctx.server.last.accept();
  await ctx.clock.advance(2000);
  ctx.server.last.serverClose(1006);
  await settle();
  assert.equal(ctx.states.at(-1).delayMs, 19999);
  await ctx.clock.advance(20000);
  // ...a stable one does.
  ctx.server.last.accept();
  await ctx.clock.advance(11000);
  ctx.server.last.serverClose(1011, "keepalive ping timeout");
  await settle();
  assert.equal(ctx.states.at(-1).delayMs, 499);
  ctx.kuda.close();
});

test("full jitter spreads delays over [0, ceiling]", async () => {
  let r = 0;
  const values = [0, 0.25, 0.75, 0.999];
  const ctx = fakeClient({ random: () => values[r++ % values.length] });
  ctx.kuda.connect().catch(() => {});
  await settle();
  const delays = [];
  for (let i = 0; i < 4; i += 1) {
    ctx.server.last.refuse();
    await settle();
    delays.push(ctx.states.at(-1).delayMs);
    await ctx.clock.advance(ctx.states.at(-1).delayMs);
  }
  assert.deepEqual(delays, [0, 250, 1500, 3996]);
  ctx.kuda.close();
});

test("1000 from the server closes for good; 1012 waits a jittered moment; 4429 backs off longer", async () => {
  const ctx = fakeClient();
  let socket = await connected(ctx);
  await ctx.clock.advance(15000);
  socket.serverClose(1012, "restart");
  await settle();
  assert.equal(ctx.states.at(-1).code, 1012);
  assert.equal(ctx.states.at(-1).delayMs, 1000, "0.5 x the 2 s restart window");
  await ctx.clock.advance(1000);
  socket = ctx.server.last;
  socket.accept();
  await ctx.clock.advance(15000);
  socket.serverClose(4429, "too slow");
  await settle();
  assert.ok(ctx.states.at(-1).delayMs >= 2000, `4429 waits at least 2 s, got ${ctx.states.at(-1).delayMs}`);
  await ctx.clock.advance(ctx.states.at(-1).delayMs);
  ctx.server.last.accept();
  await settle();
  ctx.server.last.serverClose(1000, "bye");
  await settle();
  assert.equal(ctx.kuda.state, "closed");
  assert.equal(ctx.kuda.info.code, 1000);
  const count = ctx.server.sockets.length;
  await ctx.clock.advance(120000);
  assert.equal(ctx.server.sockets.length, count, "no reconnect after 1000");
});

test("4401 asks getToken once, shared by every waiter, and reconnects at once", async () => {
  const clock = new FakeClock();
  let calls = 0;
  let release;
  const getToken = () => {
    calls += 1;
    if (calls === 1) return Promise.resolve(fakeToken(clock, 900, { n: 1 }));
    return new Promise((resolve) => (release = () => resolve(fakeToken(clock, 900, { n: calls }))));
  };
  const ctx = fakeClient({ clock, getToken });
  ctx.server.append("ride:1", 1);
  const socket = await connected(ctx);
  await clock.advance(15000);
  socket.serverClose(4401, "Token expired");
  await settle();
  assert.equal(ctx.states.at(-1).code, 4401);
  assert.equal(ctx.states.at(-1).delayMs, 0);
  await clock.advance(0);
  // A REST call waiting at the same time shares the same getToken call.
  ctx.kuda._token = undefined;
  const rest = ctx.kuda.fetchEvents("ride:1");
  await settle();
  assert.equal(calls, 2);
  release();
  await settle();
  const page = await rest;
  assert.equal(page.items.length, 1);
  assert.equal(calls, 2, "one getToken call for the reconnect and the REST call");
  ctx.server.last.accept();
  await settle();
  assert.equal(ctx.kuda.state, "connected");
  ctx.kuda.close();
});

test("unauthorized: getToken failing, or giving back the token just rejected, closes for good", async () => {
  const ctx = fakeClient({ getToken: async () => Promise.reject(new Error("refresh token revoked")) });
  const seen = [];
  ctx.kuda.on("unauthorized", (err) => seen.push(err));
  await assert.rejects(ctx.kuda.connect(), /refresh token revoked/);
  assert.equal(ctx.kuda.state, "closed");
  assert.equal(ctx.kuda.info.reason, "unauthorized");
  assert.equal(seen.length, 1);
  assert.equal(ctx.server.sockets.length, 0);

  const clock = new FakeClock();
  const token = fakeToken(clock);
  const again = fakeClient({ clock, getToken: async () => token });
  const socket = await connected(again);
  const sent = again.kuda.send("ride:1:chat", "hi").catch((err) => Promise.reject(err));
  sent.catch(() => {});
  socket.serverClose(4401, "session ended");
  await clock.advance(1000);
  assert.equal(again.kuda.state, "closed");
  assert.equal(again.kuda.info.reason, "unauthorized");
  assert.equal(again.kuda.info.code, 4401);
  await assert.rejects(sent, (err) => err.code === "unauthorized");
  assert.equal(again.server.sockets.length, 1, "no handshake with a token known to be refused");
});

test("a getToken error marked retry backs off instead of ending the session", async () => {
  let n = 0;
  const ctx = fakeClient({
    getToken: async () => {
      n += 1;
      if (n === 1) throw Object.assign(new Error("offline"), { retry: true });
      return "opaque-token";
    },
  });
  const done = ctx.kuda.connect();
  await settle();
  assert.equal(ctx.kuda.state, "disconnected");
  await ctx.clock.advance(ctx.states.at(-1).delayMs);
  ctx.server.last.accept();
  await done;
  assert.equal(ctx.kuda.state, "connected");
  ctx.kuda.close();
});

test("liveness: a ping op when quiet, a dead socket dropped, checked on the wall clock", async () => {
  const ctx = fakeClient();
  const socket = await connected(ctx, { heartbeat_s: 20 });
  await ctx.clock.advance(9000);
  assert.equal(socket.ops("ping").length, 0);
  await ctx.clock.advance(2000);
  assert.equal(socket.ops("ping").length, 1, "ping after heartbeat/2 of silence");
  socket.push({ type: "pong", id: socket.ops("ping")[0].id });
  await ctx.clock.advance(5000);
  assert.equal(ctx.kuda.state, "connected");
  // No answer for 1.5 x heartbeat: dead.
  await ctx.clock.advance(30000);
  assert.equal(ctx.server.sockets.length >= 1, true);
  assert.ok(socket.closedByClient, "the dead socket was closed");
  assert.notEqual(ctx.states.findIndex((s) => s.state === "disconnected" && /no frame/.test(s.reason)), -1);

  // Timers throttled (a background tab): the clock jumped 5 minutes and the next tick sees it.
  const ctx2 = fakeClient();
  const s2 = await connected(ctx2);
  ctx2.clock.jump(300000);
  await ctx2.clock.advance(1000);
  assert.ok(s2.closedByClient, "stale socket dropped at the first tick after waking");
  ctx.kuda.close();
  ctx2.kuda.close();
});

test("the online event and a page becoming visible wake the client", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const env = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = "hidden";
  const kuda = new Kuda({ url: "http://h", getToken: async () => "t", WebSocket: server.WebSocket, clock, random: () => 0.9, environment: env, document: doc });
  kuda.connect().catch(() => {});
  await settle();
  server.last.refuse();
  await settle();
  server.last; // waiting ~450 ms
  env.dispatchEvent(new Event("online"));
  await settle();
  assert.equal(server.sockets.length, 2, "online: reconnect at once");
  server.last.accept();
  await settle();
  clock.jump(13000);
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  await settle();
  assert.equal(server.last.ops("ping").length, 1, "visible again: check the socket at once");
  kuda.close();
  env.dispatchEvent(new Event("online"));
  await settle();
  assert.equal(server.sockets.length, 2, "listeners removed on close");
});

test("token refresh at 80% of its lifetime with the auth op, one in flight", async () => {
  const clock = new FakeClock();
  let calls = 0;
  let release;
  const getToken = ({ reason }) => {
    calls += 1;
    if (reason !== "refresh") return Promise.resolve(fakeToken(clock, 100, { n: calls }));
    return new Promise((resolve) => (release = () => resolve(fakeToken(clock, 100, { n: calls }))));
  };
  const ctx = fakeClient({ clock, getToken });
  const socket = await connected(ctx, { expires_at: new Date(clock.now() + 100000).toISOString(), heartbeat_s: 300 });
  await clock.advance(79000);
  assert.equal(calls, 1);
  await clock.advance(2000);
  assert.equal(calls, 2, "asked at 80 s of 100");
  await clock.advance(5000);
  assert.equal(calls, 2, "one refresh in flight");
  release();
  await settle();
  const auth = socket.ops("auth");
  assert.equal(auth.length, 1);
  socket.push({ type: "authed", expires_at: new Date(clock.now() + 100000).toISOString(), id: auth[0].id });
  await clock.advance(70000);
  assert.equal(calls, 2, "next refresh planned from the new token");
  await clock.advance(15000);
  assert.equal(calls, 3);
  assert.equal(ctx.server.sockets.length, 1, "same socket throughout");
  ctx.kuda.close();
});

test("a token that expired while offline is asked again before the handshake", async () => {
  const clock = new FakeClock();
  const stale = fakeToken(clock, 60);
  clock.jump(3600000);
  const fresh = fakeToken(clock, 900);
  const given = [stale, fresh];
  const ctx = fakeClient({ clock, getToken: async () => given.shift() });
  const socket = await connected(ctx);
  assert.deepEqual(socket.protocols, ["kuda.v1", `kuda.bearer.${fresh}`]);
  ctx.kuda.close();
});

test("ws-ticket mode: the ticket in the URL, the token never", async () => {
  const ctx = fakeClient({ kuda: { auth: "ticket" } });
  const socket = await connected(ctx);
  assert.match(socket.url, /^ws:\/\/kuda\.test:8000\/ws\?ticket=t\d+$/);
  assert.deepEqual(socket.protocols, ["kuda.v1"]);
  const call = ctx.server.fetches.find((f) => f.url.pathname === "/api/v1/auth/ws-ticket");
  assert.equal(call.init.method, "POST");
  assert.equal(call.init.headers.Authorization, `Bearer ${ctx.tokens[0]}`);
  ctx.kuda.close();
});

test("send resolves with the ack's data and retries with the same client_id across a reconnect", async () => {
  const ctx = fakeClient();
  let socket = await connected(ctx);
  const sent = ctx.kuda.send("ride:17:chat", "hi");
  await settle();
  const first = socket.ops("send")[0];
  assert.equal(first.channel, "ride:17:chat");
  assert.equal(first.body, "hi");
  assert.equal(typeof first.client_id, "string");
  socket.serverClose(1012, "restart");
  await ctx.clock.advance(2000);
  socket = ctx.server.last;
  socket.accept();
  await settle();
  const again = socket.ops("send")[0];
  assert.equal(again.client_id, first.client_id, "same client_id: the server stores it once");
  socket.push({ type: "ack", id: again.id, data: { id: 311, body: "hi" } });
  assert.deepEqual(await sent, { id: 311, body: "hi" });

  const refused = ctx.kuda.send("ride:18:chat", "no");
  await settle();
  socket.push({ type: "error", code: "forbidden", message: "not a member", id: socket.ops("send")[1].id });
  await assert.rejects(refused, (err) => err.code === "forbidden");
  ctx.kuda.close();
  await assert.rejects(ctx.kuda.send("ride:17:chat", "late"), (err) => err.code === "closed");
});

test("ops are paced under the server's rate limit", async () => {
  const ctx = fakeClient();
  const socket = await connected(ctx);
  for (let i = 1; i <= 60; i += 1) ctx.kuda.subscribe(`ride:${i}`, () => {});
  await settle(20);
  const early = socket.ops("subscribe").length;
  assert.ok(early <= 30, `burst bounded, sent ${early}`);
  await ctx.clock.advance(3000);
  assert.equal(socket.ops("subscribe").length, 60);
  ctx.kuda.close();
});

test("presence resolves with the users list", async () => {
  const ctx = fakeClient();
  const socket = await connected(ctx);
  const users = ctx.kuda.presence("ride:17:chat");
  await settle();
  const op = socket.ops("presence")[0];
  socket.push({ type: "presence", channel: "ride:17:chat", users: [42, 43], id: op.id });
  assert.deepEqual(await users, [42, 43]);
  ctx.kuda.close();
});

test("never two connections at a time, whatever wakes the client or closes the socket", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const env = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = "visible";
  const kuda = new Kuda({ url: "http://h", getToken: async () => fakeToken(clock), WebSocket: server.WebSocket, clock, random: () => 0.5, environment: env, document: doc });
  const wake = async () => {
    env.dispatchEvent(new Event("online"));
    doc.dispatchEvent(new Event("visibilitychange"));
    kuda.reconnectNow();
    await settle();
  };
  kuda.connect().catch(() => {});
  await settle();
  await wake(); // connecting: nothing more
  await clock.advance(16000); // no welcome: abandoned, then one more
  await wake();
  await clock.advance(1000);
  server.last.accept();
  await settle();
  await wake(); // connected: a ping, not a socket
  for (const code of [1006, 1012, 4401, 4429, 1011]) {
    server.last.serverClose(code, "");
    await wake();
    await wake();
    await clock.advance(5000);
    server.last.accept();
    await settle();
  }
  clock.jump(120000); // silent socket: dropped as dead at the next tick
  await clock.advance(1000);
  await wake();
  await clock.advance(1000);
  server.last.accept();
  await settle();
  kuda.close();
  kuda.connect().catch(() => {});
  await settle();
  assert.equal(server.maxAtOnce, 1, "a new socket only once the previous one is closed or abandoned");
  assert.ok(server.sockets.length >= 8, `sockets made: ${server.sockets.length}`);
  kuda.close();
});

test("a hidden page becoming visible reconnects at once; a live socket that no longer answers is replaced", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const doc = new EventTarget();
  doc.visibilityState = "hidden";
  const kuda = new Kuda({ url: "http://h", getToken: async () => fakeToken(clock), WebSocket: server.WebSocket, clock, random: () => 0.99, environment: new EventTarget(), document: doc });
  kuda.connect().catch(() => {});
  await settle();
  server.last.accept();
  await clock.advance(60000);
  for (let i = 0; i < 4; i += 1) {
    server.last.refuse(); // the server is away: the delays grow
    await settle();
    await clock.advance(kuda.info.delayMs);
  }
  server.last.refuse();
  await settle();
  assert.ok(kuda.info.delayMs > 7000, `waiting ${kuda.info.delayMs} ms`);
  const count = server.sockets.length;
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  await settle();
  assert.equal(server.sockets.length, count + 1, "visible: reconnect now, not after the delay");
  server.last.accept({ heartbeat_s: 20 }); // pings after 10 s of silence; a woken ping waits 10 s
  await clock.advance(3000);
  // The page is hidden and shown again: the socket looks fine (frames 3 s ago) but is dead.
  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("visibilitychange"));
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  await settle();
  const ping = server.last.ops("ping");
  assert.equal(ping.length, 1, "checked at once");
  await clock.advance(4000);
  assert.equal(kuda.state, "connected", "the verdict waits a few seconds");
  await clock.advance(6000);
  assert.equal(kuda.state, "disconnected");
  assert.match(kuda.info.reason, /no pong/);
  assert.ok(server.sockets.at(-1).closedByClient);
  kuda.close();
});

test("4429 and a handshake refused 429 back off for seconds, and waking up does not cut that short", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const env = new EventTarget();
  const kuda = new Kuda({ url: "http://h", getToken: async () => fakeToken(clock), WebSocket: server.WebSocket, clock, random: () => 0.5, environment: env, document: new EventTarget() });
  kuda.connect().catch(() => {});
  await settle();
  server.last.accept();
  await clock.advance(15000);
  server.last.serverClose(4429, "too slow");
  await settle();
  assert.equal(kuda.info.code, 4429);
  assert.equal(kuda.info.delayMs, 3000, "between half and all of max(4 s, ceiling)");
  env.dispatchEvent(new Event("online"));
  await clock.advance(2900);
  assert.equal(server.sockets.length, 1, "the online event does not skip a rate-limit pause");
  await clock.advance(100);
  assert.equal(server.sockets.length, 2);
  server.last.refuse(429); // too many sockets for this user
  await settle();
  assert.equal(kuda.info.status, 429);
  assert.match(kuda.info.reason, /HTTP 429/);
  assert.ok(kuda.info.delayMs >= 2000, `waits ${kuda.info.delayMs}`);
  env.dispatchEvent(new Event("online"));
  await settle();
  assert.equal(server.sockets.length, 2);
  kuda.close();
});

test("a handshake refused 401 asks for a fresh token; the same token again is unauthorized, without a loop", async () => {
  const clock = new FakeClock();
  const reasons = [];
  const issued = [fakeToken(clock, 900, { n: 1 }), fakeToken(clock, 900, { n: 2 })];
  const ctx = fakeClient({
    clock,
    getToken: async ({ reason }) => {
      reasons.push(reason);
      return issued[Math.min(reasons.length, 2) - 1];
    },
  });
  const seen = [];
  ctx.kuda.on("unauthorized", (err) => seen.push(err));
  const done = ctx.kuda.connect();
  done.catch(() => {});
  await settle();
  ctx.server.last.refuse(401);
  await ctx.clock.advance(1000);
  assert.equal(ctx.server.sockets.length, 2, "a fresh token was worth another handshake");
  assert.deepEqual(ctx.server.last.protocols, ["kuda.v1", `kuda.bearer.${issued[1]}`]);
  assert.deepEqual(reasons, ["connect", "expired"], "getToken is told the last token was refused");
  ctx.server.last.refuse(401); // e.g. the session ended: every token of it is refused
  await ctx.clock.advance(60000);
  assert.equal(ctx.kuda.state, "closed");
  assert.equal(ctx.kuda.info.reason, "unauthorized");
  assert.equal(seen.length, 1);
  assert.equal(ctx.server.sockets.length, 2, "no handshake with a token known to be refused");
  await assert.rejects(done, (err) => err.code === "unauthorized");
});

test("ticket mode: a handshake refused 401 is about the ticket: a new ticket, the same token", async () => {
  const clock = new FakeClock();
  const token = fakeToken(clock);
  let calls = 0;
  const ctx = fakeClient({ clock, kuda: { auth: "ticket" }, getToken: async () => (calls += 1, token) });
  ctx.kuda.connect().catch(() => {});
  await settle();
  ctx.server.last.refuse(401);
  await ctx.clock.advance(1000);
  assert.equal(ctx.server.sockets.length, 2, "not unauthorized: the token was good a moment ago");
  assert.notEqual(ctx.server.sockets[1].url, ctx.server.sockets[0].url, "a new ticket");
  assert.equal(calls, 2);
  ctx.server.last.accept();
  await settle();
  assert.equal(ctx.kuda.state, "connected");
  ctx.kuda.close();
});

test("getToken failures: network trouble and 5xx back off, anything else ends the session", async () => {
  for (const [error, fatal] of [
    [new TypeError("fetch failed"), false],
    [Object.assign(new Error("Service Unavailable"), { status: 503 }), false],
    [Object.assign(new Error("refresh refused"), { status: 401 }), true],
    [new Error("signed out"), true],
    [Object.assign(new TypeError("odd"), { retry: false }), true],
  ]) {
    let calls = 0;
    const ctx = fakeClient({
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw error;
        return "opaque";
      },
    });
    ctx.kuda.connect().catch(() => {});
    await ctx.clock.advance(2000);
    if (fatal) {
      assert.equal(ctx.kuda.state, "closed", String(error));
      assert.equal(ctx.kuda.info.reason, "unauthorized");
      assert.equal(calls, 1);
    } else {
      assert.equal(calls, 2, String(error));
      assert.equal(ctx.kuda.state, "connecting");
      assert.equal(ctx.server.sockets.length, 1);
    }
    ctx.kuda.close();
  }
});

test("a device clock running ahead of the server's does not turn the token refresh into a loop", async () => {
  // Without a floor, a token that looks due at once is refreshed at every 1 s tick: ~600 calls.
  for (const [skewMs, most] of [[850000, 30], [3600000, 10]]) {
  const clock = new FakeClock();
  const serverClock = { now: () => clock.now() - skewMs }; // tokens live 15 minutes
  let calls = 0;
  const ctx = fakeClient({
    clock,
    getToken: async () => {
      calls += 1;
      return fakeToken(serverClock, 900, { n: calls });
    },
  });
  ctx.server.onFrame = (socket, frame) => {
    if (frame.op === "auth") queueMicrotask(() => socket.push({ type: "authed", expires_at: new Date(serverClock.now() + 900000).toISOString(), id: frame.id }));
  };
  await connected(ctx, { expires_at: new Date(serverClock.now() + 900000).toISOString(), heartbeat_s: 3600 });
  await ctx.clock.advance(600000);
  assert.ok(calls >= 2 && calls <= most, `${skewMs} ms ahead: getToken asked ${calls} times in 10 minutes`);
  assert.equal(ctx.server.sockets.length, 1);
  ctx.kuda.close();
  }
});

test("close() leaves no timer behind: retries, gap fills, sends, grace periods", async () => {
  const ctx = fakeClient();
  ctx.server.append("ride:1", 3);
  let failures = 3;
  ctx.server.onFrame = (socket, frame) => {
    if (frame.op !== "subscribe") return;
    queueMicrotask(() => {
      if (frame.channel === "user:42" && failures-- > 0) socket.push({ type: "error", code: "internal_error", message: "x", id: frame.id });
      else socket.push({ type: "subscribed", channel: frame.channel, seq: frame.channel === "ride:1" ? 3 : 0, recovered: true, id: frame.id });
    });
  };
  ctx.server.fetchFails = true; // the gap fill waits between tries
  ctx.kuda.subscribe("ride:1", () => {}, { since: 0 });
  ctx.kuda.subscribe("user:42", () => {});
  const gone = ctx.kuda.subscribe("ride:2", () => {});
  const socket = await connected(ctx);
  await settle(10);
  gone.unsubscribe();
  const sent = ctx.kuda.send("ride:1:chat", "pending");
  sent.catch(() => {});
  socket.push(ctx.server.event("ride:1", 5)); // early: a gap to fill
  await settle(10);
  assert.ok(ctx.clock.timers.size >= 4, `timers while running: ${ctx.clock.timers.size}`);
  ctx.kuda.close();
  assert.equal(ctx.clock.timers.size, 0);
  await assert.rejects(sent, (err) => err.code === "closed");
});

test("listeners never accumulate: environment, socket and registry are the same after many reconnects", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  autoSubscribe(server);
  const counts = { add: 0, remove: 0 };
  const target = () => ({
    addEventListener: () => void (counts.add += 1),
    removeEventListener: () => void (counts.remove += 1),
  });
  const kuda = new Kuda({ url: "http://h", getToken: async () => fakeToken(clock), WebSocket: server.WebSocket, fetch: server.fetch, clock, random: () => 0.5, environment: target(), document: target() });
  const got = [];
  kuda.subscribe("ride:1", (f) => got.push(f.seq), { since: 0 });
  kuda.connect().catch(() => {});
  await settle();
  for (let i = 0; i < 10; i += 1) {
    server.last.accept();
    await settle(10);
    server.append("ride:1", 1);
    server.last.push(server.logs.get("ride:1").at(-1));
    server.last.serverClose(1006);
    await clock.advance(20000);
  }
  server.last.accept();
  await settle(10);
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "each event once");
  assert.deepEqual(kuda.stats(), { channels: 1, listeners: 1, pending: 0 });
  assert.equal(counts.add, 2, "online + visibilitychange, once");
  kuda.close();
  assert.equal(counts.remove, 2);
  kuda.connect().catch(() => {});
  kuda.close();
  assert.equal(counts.add, 4);
  assert.equal(counts.remove, 4);
  for (const s of server.sockets) {
    if (s.onmessage) assert.equal(s.onmessage.name, "noop", "old sockets hold no client handler");
  }
});

test("a 4401 while a getToken call for a REST request is in flight: asked again as expired, not unauthorized", async () => {
  const clock = new FakeClock();
  let cached = fakeToken(clock, 900, { n: 0 });
  const reasons = [];
  let release;
  const getToken = ({ reason }) => {
    reasons.push(reason);
    if (reason === "expired") {
      cached = fakeToken(clock, 900, { n: reasons.length });
      return Promise.resolve(cached);
    }
    if (reasons.length === 2) return new Promise((resolve) => (release = () => resolve(cached))); // slow cache read
    return Promise.resolve(cached);
  };
  const ctx = fakeClient({ clock, getToken });
  ctx.server.append("ride:1", 1);
  const socket = await connected(ctx);
  await clock.advance(15000);
  ctx.kuda._token = undefined; // e.g. the token was forgotten: the REST call asks getToken
  const rest = ctx.kuda.fetchEvents("ride:1");
  await settle();
  socket.serverClose(4401, "Token expired");
  await clock.advance(0); // stable: the next attempt at once, waiting on the call in flight
  assert.deepEqual(reasons, ["connect", "rest"]);
  release();
  await settle(10);
  assert.notEqual(ctx.kuda.state, "closed");
  assert.deepEqual(reasons, ["connect", "rest", "expired"]);
  ctx.server.last.accept();
  await settle();
  assert.equal(ctx.kuda.state, "connected");
  assert.deepEqual(ctx.server.last.protocols, ["kuda.v1", `kuda.bearer.${cached}`]);
  assert.equal((await rest).items.length, 1);
  ctx.kuda.close();
});

test("a laptop that slept past its token's expiry: the dead socket is dropped and the expired token never used", async () => {
  const clock = new FakeClock();
  let token = fakeToken(clock, 900);
  const reasons = [];
  const getToken = async ({ reason }) => {
    reasons.push(reason);
    if (reason === "expired" || reason === "refresh") token = fakeToken(clock, 900, { n: reasons.length });
    return token; // a cache that hands back what it has unless told it expired
  };
  const ctx = fakeClient({ clock, getToken });
  const first = await connected(ctx);
  clock.jump(3 * 3600 * 1000); // asleep for 3 hours
  await clock.advance(1000);
  assert.ok(first.closedByClient, "the silent socket was dropped at the first tick");
  await clock.advance(1000);
  const next = ctx.server.last;
  assert.notEqual(next, first);
  assert.deepEqual(next.protocols, ["kuda.v1", `kuda.bearer.${token}`]);
  assert.ok(JSON.parse(Buffer.from(token.split(".")[1], "base64url")).exp * 1000 > clock.now(), "a fresh token");
  assert.deepEqual(reasons.slice(-2), ["connect", "expired"]);
  ctx.kuda.close();
});

test("connect() resolves with the welcome once the subscriptions made before it are answered (at most 5 s)", async () => {
  for (const answer of ["ack", "never", "close"]) {
    const ctx = fakeClient();
    ctx.server.onFrame = (socket, frame) => {
      if (frame.op === "subscribe" && answer === "ack") {
        ctx.clock.setTimeout(() => socket.push({ type: "subscribed", channel: frame.channel, seq: 0, recovered: true, id: frame.id }), 300);
      }
    };
    ctx.kuda.subscribe("user:42", () => {});
    let welcome;
    const done = ctx.kuda.connect().then((w) => (welcome = w));
    await settle();
    ctx.server.last.accept();
    await settle();
    assert.equal(ctx.kuda.state, "connected");
    assert.equal(welcome, undefined, `${answer}: not yet, the subscription is not live`);
    if (answer === "ack") await ctx.clock.advance(300);
    if (answer === "never") await ctx.clock.advance(5000);
    if (answer === "close") ctx.kuda.close();
    await done;
    assert.equal(welcome.type, "welcome", answer);
    ctx.kuda.close();
    assert.equal(ctx.clock.timers.size, 0);
  }
  // Nothing subscribed: at once.
  const ctx = fakeClient();
  await connected(ctx);
  ctx.kuda.close();
});
