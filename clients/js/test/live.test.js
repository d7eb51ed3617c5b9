// The SDK against real `kuda serve` processes: two instances on one database and Redis.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import WebSocket from "ws";

import { Kuda, localStorageCursorStore } from "../src/index.js";
import { Api, Cluster, waitFor } from "./helpers/cluster.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const TOKEN_TTL_S = 12;
let cluster;
let a;
let b;
let api;
let driver;
let driverToken;
const clients = [];

before(async () => {
  cluster = new Cluster({ ACCESS_TOKEN_TTL_S: String(TOKEN_TTL_S) });
  [a, b] = await cluster.start(2);
  api = new Api(b.url);
  driver = await api.user("driver");
  driverToken = api.session(driver);
});

after(async () => {
  for (const kuda of clients) kuda.close();
  await cluster?.stop();
});

function client(url, getToken, options = {}) {
  const kuda = new Kuda({ url, getToken, WebSocket, ...options });
  clients.push(kuda);
  return kuda;
}

function recorder(kuda) {
  const states = [];
  kuda.on("state", (state, info) => states.push({ state, ...info, t: Date.now() }));
  return states;
}

const seqsOf = (frames) => frames.filter((f) => f.type === "event" && typeof f.seq === "number").map((f) => f.seq);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function post(rideId, n, prefix) {
  for (let i = 0; i < n; i += 1) await api.message(await driverToken(), rideId, `${prefix} ${i}`);
}

test("events missed while the instance was down arrive once and in order, after 1012 and after SIGKILL", async () => {
  const ride = await api.ride(await driverToken());
  const channel = `ride:${ride.id}:chat`;
  const kuda = client(a.url, driverToken);
  const states = recorder(kuda);
  const got = [];
  kuda.subscribe(channel, (frame) => got.push(frame));
  const welcome = await kuda.connect();
  assert.equal(welcome.user_id, driver.user.id);
  const ack = await kuda.send(channel, "hello over the socket");
  assert.equal(ack.body, "hello over the socket");
  await post(ride.id, 2, "before");
  await waitFor(() => seqsOf(got).length === 3, { what: "3 events" });

  await a.stop("SIGTERM");
  await waitFor(() => states.some((s) => s.state === "disconnected" && s.code === 1012), { what: "1012" });
  await post(ride.id, 5, "while restarting");
  await a.start();
  await waitFor(() => seqsOf(got).length === 8, { what: "8 events" });
  await post(ride.id, 2, "after");
  await waitFor(() => seqsOf(got).length === 10, { what: "10 events" });
  assert.deepEqual(seqsOf(got), range(1, 10));

  await a.stop("SIGKILL");
  await waitFor(() => states.some((s) => s.state === "disconnected" && s.code === 1006), { what: "1006" });
  await post(ride.id, 5, "after the kill");
  await a.start();
  await post(ride.id, 1, "live again");
  await waitFor(() => seqsOf(got).length === 16, { what: "16 events" });
  await new Promise((r) => setTimeout(r, 500)); // anything extra (a duplicate) would show now
  assert.deepEqual(seqsOf(got), range(1, 16), "each seq once, in order");
  assert.ok(!got.some((f) => f.type === "reset"));
  assert.equal(kuda.state, "connected");
  assert.deepEqual(kuda.stats(), { channels: 1, listeners: 1, pending: 0 });
});

test("the token is refreshed on the live socket (auth op) and the socket outlives the first token", async () => {
  const account = await api.user("refresher");
  const getToken = api.session(account);
  const kuda = client(b.url, getToken, { auth: "ticket" });
  const states = recorder(kuda);
  const authed = [];
  kuda.on("authed", (frame) => authed.push(frame));
  const welcome = await kuda.connect();
  const firstExpiry = Date.parse(welcome.expires_at);
  await waitFor(() => authed.length >= 1 && Date.now() > firstExpiry + 2000, { what: "a refresh past the first expiry" });
  assert.equal(kuda.state, "connected");
  assert.deepEqual(states.map((s) => s.state), ["connecting", "connected"], "never dropped");
  assert.ok(Date.parse(authed[0].expires_at) > firstExpiry);
  // And the socket still works: a ping round trip through the server.
  const users = await kuda.request("GET", "/users/me");
  assert.equal(users.id, account.user.id);
});

test("a subscription more than 1,000 events behind is filled from the REST replay, without a reset", async () => {
  const ride = await api.ride(await driverToken());
  const channel = `ride:${ride.id}:chat`;
  const total = 1005;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < total) {
        next += 1;
        await api.message(await driverToken(), ride.id, `m${next}`);
      }
    }),
  );
  const kuda = client(a.url, driverToken);
  const got = [];
  kuda.subscribe(channel, (frame) => got.push(frame), { since: 0 });
  await kuda.connect();
  await waitFor(() => seqsOf(got).length >= total, { what: `${total} events` });
  await post(ride.id, 1, "live");
  await waitFor(() => seqsOf(got).length === total + 1, { what: "the live event" });
  assert.deepEqual(seqsOf(got), range(1, total + 1));
  assert.ok(!got.some((f) => f.type === "reset"), "recovered over REST: no refetch needed");
  const fetched = seqsOf(got).length;
  assert.equal(fetched, total + 1);
});

test("the example of PROTOCOL.md section 7, as written", async () => {
  const { pair, id } = await signIn("example");
  const ride = await instantRide(pair.access_token);
  const accessToken = pair.access_token;
  const events = [];
  const seen = [];
  // --- the example, with this test's url, user and ride
  const kuda = new Kuda({ url: a.url, getToken: async () => accessToken, WebSocket }); // WebSocket: only
  // where the runtime has no global one (Node < 22: pass the `ws` package's class)
  kuda.on("state", (s) => seen.push(s)); // "connecting" | "connected" | "disconnected" | "closed"
  const sub = kuda.subscribe(`user:${id}`, (event) => events.push(event), { since: 0 }); // event: the server's event frame
  const welcome = await kuda.connect(); // resolves on `welcome`
  const data = await kuda.send(`ride:${ride.id}:chat`, "hi"); // resolves with the ack's data
  // --- what it did
  assert.equal(welcome.type, "welcome");
  assert.equal(welcome.user_id, id);
  assert.equal(kuda.state, "connected");
  const stored = await api.call("GET", `/rides/${ride.id}/messages`, { token: accessToken });
  assert.deepEqual(data, stored.items[0], "the ack's data is the stored message");
  const rider = await signIn("example-rider");
  await api.call("POST", `/rides/${ride.id}/bookings`, { token: rider.pair.access_token, json: { seats: 1 } });
  await waitFor(() => events.length >= 1, { what: "the driver's notification of the booking" });
  assert.equal(events[0].event, "notification.created");
  for (const event of events) {
    assert.deepEqual(Object.keys(event).sort(), ["at", "channel", "data", "event", "seq", "type"]);
    assert.equal(event.type, "event");
    assert.equal(event.channel, `user:${id}`);
  }
  assert.deepEqual(seqsOf(events), range(1, events.length));
  sub.unsubscribe(); kuda.close();
  assert.deepEqual(seen, ["connecting", "connected", "closed"]);
  assert.equal(sub.state, "unsubscribed");
});

test("the SDK imports from the repository root as ./clients/js/src/index.js", async () => {
  const { execFile } = await import("node:child_process");
  const { REPO } = await import("./helpers/cluster.js");
  const code = 'import { Kuda, KudaError } from "./clients/js/src/index.js"; console.log(typeof Kuda, typeof KudaError);';
  const out = await new Promise((resolveOut, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", code], { cwd: REPO }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolveOut(stdout))),
  );
  assert.equal(out.trim(), "function function");
});

test("after `await connect()`, a channel subscribed without since gets the events of what the app does next", async () => {
  const rides = await Promise.all(Array.from({ length: 10 }, async () => api.ride(await driverToken())));
  const clientsOf = rides.map((ride, i) => {
    const kuda = client(i % 2 ? a.url : b.url, driverToken);
    const got = [];
    kuda.subscribe(`ride:${ride.id}:chat`, (frame) => got.push(frame)); // no since: from now on
    return { kuda, got, ride };
  });
  await Promise.all(clientsOf.map(async (c) => {
    await c.kuda.connect();
    await api.message(await driverToken(), c.ride.id, "right after connect");
  }));
  await waitFor(() => clientsOf.every((c) => seqsOf(c.got).length === 1), { what: "each client's message" });
  for (const c of clientsOf) {
    assert.deepEqual(seqsOf(c.got), [1]);
    c.kuda.close();
  }
});

/** Signs in and returns the token pair; `getToken` variants are built on it per test. */
async function signIn(name) {
  const account = await api.user(name);
  const pair = await api.login(account);
  return { account, pair, id: account.user.id };
}

async function instantRide(token) {
  const departure = new Date(Date.now() + 3 * 24 * 3600 * 1000).toISOString();
  return api.call("POST", "/rides", {
    token,
    json: { origin: "Innopolis", destination: "Kazan", departure_at: departure, seats_total: 3, price: 300, instant_booking: true },
  });
}

test("a session ended by logout closes the socket 4401 on every instance and ends in unauthorized, without a reconnect loop", async () => {
  // The app's getToken can only hand back the token it has (the session is over).
  const { pair, id } = await signIn("leaver");
  const calls = [];
  const getToken = async ({ reason }) => {
    calls.push(reason);
    return pair.access_token;
  };
  const onA = client(a.url, getToken);
  const onB = client(b.url, getToken);
  const watched = [onA, onB].map((kuda) => {
    const seen = { states: recorder(kuda), unauthorized: [] };
    kuda.on("unauthorized", (err) => seen.unauthorized.push(err));
    kuda.subscribe(`user:${id}`, () => {}, { since: 0 });
    return seen;
  });
  await Promise.all([onA.connect(), onB.connect()]);

  await api.call("POST", "/auth/logout", { json: { refresh_token: pair.refresh_token } });
  for (const [i, kuda] of [onA, onB].entries()) {
    await waitFor(() => kuda.state === "closed", { what: `client ${i} closed`, timeoutMs: 30000 });
    assert.equal(kuda.info.reason, "unauthorized");
    assert.equal(kuda.info.code, 4401);
    assert.equal(watched[i].unauthorized.length, 1);
    assert.equal(watched[i].unauthorized[0].code, "unauthorized");
    assert.ok(watched[i].states.some((s) => s.state === "disconnected" && s.code === 4401), "the server closed 4401");
  }
  // No loop: nothing happens any more, and REST refuses the token too.
  const asked = calls.length;
  const states = watched.map((w) => w.states.length);
  await sleep(3000);
  assert.equal(calls.length, asked);
  assert.deepEqual(watched.map((w) => w.states.length), states);
  for (const w of watched) assert.equal(w.states.filter((s) => s.state === "connected").length, 1, "one connection, never another");
  await assert.rejects(onA.request("GET", "/users/me"), (err) => err.status === 401);
  // A client started later with the ended session's token: the handshake is refused 401, which
  // Node's `ws` reports; getToken has nothing fresher: unauthorized after that one handshake.
  const late = client(b.url, getToken);
  const lateStates = recorder(late);
  await assert.rejects(late.connect(), (err) => err.code === "unauthorized");
  assert.ok(lateStates.some((s) => s.state === "disconnected" && s.status === 401), JSON.stringify(lateStates));
  assert.equal(lateStates.filter((s) => s.state === "connecting").length, 2, "one handshake, then getToken once more");
});

test("after a logout, a getToken that tries to refresh (and is refused) ends in unauthorized too", async () => {
  const { account, pair } = await signIn("refresher-out");
  let current = pair;
  const reasons = [];
  const getToken = async ({ reason }) => {
    reasons.push(reason);
    if (reason === "connect" || reason === "rest") return current.access_token;
    current = await api.call("POST", "/auth/refresh", { json: { refresh_token: current.refresh_token } }); // 401 after logout
    return current.access_token;
  };
  const kuda = client(a.url, getToken);
  const states = recorder(kuda);
  const errors = [];
  kuda.on("unauthorized", (err) => errors.push(err));
  await kuda.connect();
  await api.call("POST", "/auth/logout", { json: { refresh_token: pair.refresh_token } });
  await waitFor(() => kuda.state === "closed", { what: "closed", timeoutMs: 30000 });
  assert.equal(kuda.info.reason, "unauthorized");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "unauthorized");
  assert.equal(errors[0].cause.status, 401, "the refused refresh is the reason");
  assert.ok(reasons.includes("expired"), "after a 4401 getToken is told the token was refused");
  const count = states.length;
  await sleep(2000);
  assert.equal(states.length, count, "no reconnect loop");
  // Signing in again starts a new session, and the same client connects again.
  current = await api.login(account);
  await kuda.connect();
  assert.equal(kuda.state, "connected");
});

test("send retried across a reconnect (the ack lost with the connection) is stored and delivered once", async () => {
  const ride = await api.ride(await driverToken());
  const channel = `ride:${ride.id}:chat`;
  const sent = [];
  let dropAcks = 1;
  // A socket that loses its connection right after the server stored the message, before the ack.
  class LossyWebSocket extends WebSocket {
    send(data) {
      sent.push({ socket: this, frame: JSON.parse(data) });
      super.send(data);
    }
    set onmessage(fn) {
      super.onmessage = fn && ((event) => {
        if (this.lost) return;
        if (dropAcks > 0 && JSON.parse(String(event.data)).type === "ack") {
          dropAcks -= 1;
          this.lost = true;
          this.terminate(); // no close frame: 1006, as a dropped network
          return;
        }
        fn(event);
      });
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  const kuda = client(a.url, driverToken, { WebSocket: LossyWebSocket });
  const states = recorder(kuda);
  const got = [];
  kuda.subscribe(channel, (frame) => got.push(frame), { since: 0 });
  await kuda.connect();
  const body = `once ${Date.now()}`;
  const stored = await kuda.send(channel, body);
  assert.equal(stored.body, body);
  const sends = sent.filter((s) => s.frame.op === "send");
  assert.equal(sends.length, 2, "sent again after the reconnect");
  assert.notEqual(sends[0].socket, sends[1].socket);
  assert.equal(sends[1].frame.client_id, sends[0].frame.client_id, "with the same client_id");
  assert.ok(states.some((s) => s.state === "disconnected" && s.code === 1006));
  const page = await api.call("GET", `/rides/${ride.id}/messages`, { token: await driverToken() });
  const mine = page.items.filter((m) => m.body === body);
  assert.equal(mine.length, 1, "stored once");
  assert.equal(mine[0].id, stored.id, "the ack after the retry is the first stored message");
  assert.equal(mine[0].client_id, sends[0].frame.client_id);
  await post(ride.id, 1, "after");
  await waitFor(() => seqsOf(got).length === 2, { what: "the message and the next one" });
  await sleep(500);
  const created = got.filter((f) => f.event === "message.created" && f.data.body === body);
  assert.equal(created.length, 1, "one message.created");
  assert.deepEqual(seqsOf(got), [1, 2]);
});

test("presence through the SDK across two instances: the presence op, presence.joined and presence.left once per user", async () => {
  const driverSession = await signIn("presence-driver");
  const riderSession = await signIn("presence-rider");
  const ride = await instantRide(driverSession.pair.access_token);
  await api.call("POST", `/rides/${ride.id}/bookings`, { token: riderSession.pair.access_token, json: { seats: 1 } });
  const chat = `ride:${ride.id}:chat`;
  const driverKuda = client(a.url, async () => driverSession.pair.access_token);
  const frames = [];
  driverKuda.subscribe(chat, (frame) => frames.push(frame));
  const lists = [];
  const watch = driverKuda.watchPresence(chat, (users) => lists.push(users));
  await driverKuda.connect();
  await waitFor(() => lists.some((l) => l.length === 1 && l[0] === driverSession.id), { what: "the driver alone" });

  // The rider on the other instance, on two sockets (two tabs): one join, one leave.
  const riderB = client(b.url, async () => riderSession.pair.access_token);
  const riderA = client(a.url, async () => riderSession.pair.access_token);
  const subB = riderB.subscribe(chat, () => {});
  await riderB.connect();
  const both = [driverSession.id, riderSession.id].sort((x, y) => x - y);
  await waitFor(() => JSON.stringify(lists.at(-1)) === JSON.stringify(both), { what: "the rider joined" });
  assert.deepEqual((await riderB.presence(chat)).sort((x, y) => x - y), both, "the presence op, from the rider's instance");
  assert.deepEqual((await driverKuda.presence(chat)).sort((x, y) => x - y), both, "and from the driver's");
  const subA = riderA.subscribe(chat, () => {});
  await riderA.connect();
  await waitFor(() => subA.state === "subscribed", { what: "the second tab subscribed" });
  subB.unsubscribe(); // the grace period passes, then the server unsubscribe: the other tab stays
  await waitFor(() => riderB.stats().channels === 0, { what: "the first tab let go" });
  await sleep(1000);
  subA.unsubscribe();
  await waitFor(() => JSON.stringify(lists.at(-1)) === JSON.stringify([driverSession.id]), { what: "the rider left" });
  await sleep(500);
  const presence = frames.filter((f) => f.type === "event" && f.event.startsWith("presence."));
  assert.deepEqual(
    presence.map((f) => [f.event, f.data.user_id]),
    [["presence.joined", riderSession.id], ["presence.left", riderSession.id]],
    "one join and one leave for two sockets",
  );
  assert.ok(presence.every((f) => f.seq === undefined), "ephemeral: no seq");
  watch.unsubscribe();
});

test("an app started again resumes from its cursor store: what was missed while it was gone, once", async () => {
  const ride = await api.ride(await driverToken());
  const channel = `ride:${ride.id}:chat`;
  const memory = new Map();
  const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => void memory.set(k, v), removeItem: (k) => void memory.delete(k) };
  const first = client(a.url, driverToken, { cursorStore: localStorageCursorStore({ storage }) });
  const before = [];
  first.subscribe(channel, (frame) => before.push(frame), { since: 0 });
  await first.connect();
  await post(ride.id, 3, "before");
  await waitFor(() => seqsOf(before).length === 3, { what: "3 events" });
  first.close(); // the app is killed
  await post(ride.id, 2, "while gone");
  // Started again: no `since` from the app, the store knows.
  const second = client(b.url, driverToken, { cursorStore: localStorageCursorStore({ storage }) });
  const after = [];
  second.subscribe(channel, (frame) => after.push(frame));
  await second.connect();
  await post(ride.id, 1, "live");
  await waitFor(() => seqsOf(after).length === 3, { what: "the missed and the live" });
  await sleep(300);
  assert.deepEqual(seqsOf(after), [4, 5, 6]);
  assert.equal(memory.get(`kuda:cursor:${channel}`), "6");
});

test("200 clients reconnecting after a restart spread over the jitter window", async () => {
  // On user:{id} (authorized without the database): 200 sockets subscribing to one ride chat at
  // once exhaust the server's pool today (the chat rule opens a second session inside the first).
  const passenger = await api.user("passenger");
  const passengerToken = api.session(passenger);
  const channel = `user:${driver.user.id}`;
  const book = async () => {
    const ride = await api.ride(await driverToken());
    await api.call("POST", `/rides/${ride.id}/bookings`, { token: await passengerToken(), json: { seats: 1 } });
  };
  const head = async () => (await api.call("GET", `/channels/${channel}/events?since=0&limit=1`, { token: await driverToken() })).latest_seq;
  const n = 200;
  const fleet = [];
  for (let i = 0; i < n; i += 1) {
    const kuda = client(a.url, driverToken);
    const states = recorder(kuda);
    const got = [];
    kuda.subscribe(channel, (frame) => got.push(frame), { since: 0 });
    fleet.push({ kuda, states, got });
  }
  await Promise.all(fleet.map((c) => c.kuda.connect()));
  await book();
  let last = await head();
  await waitFor(() => fleet.every((c) => seqsOf(c.got).length === last), { what: "everyone subscribed" });

  const stopAt = Date.now();
  await a.stop("SIGTERM");
  await book();
  await a.start();
  const readyAt = Date.now();
  last = await head();
  await waitFor(() => fleet.every((c) => c.kuda.state === "connected" && seqsOf(c.got).length === last), {
    what: "everyone back with the missed events",
    timeoutMs: 120000,
  });
  for (const c of fleet) assert.deepEqual(seqsOf(c.got), range(1, last));

  // Figures: the first delay each client chose after 1012, and when each came back.
  const firstDelays = fleet.map((c) => c.states.find((s) => s.state === "disconnected" && s.code === 1012).delayMs);
  const back = fleet.map((c) => c.states.findLast((s) => s.state === "connected").t - readyAt);
  const attempts = fleet.map((c) => c.states.filter((s, i) => s.state === "connecting" && i > 1).length);
  const stats = (xs) => {
    const s = [...xs].sort((x, y) => x - y);
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
    return `min ${s[0]} p25 ${q(0.25)} p50 ${q(0.5)} p75 ${q(0.75)} max ${s.at(-1)}`;
  };
  const buckets = new Array(8).fill(0);
  for (const d of firstDelays) buckets[Math.min(7, Math.floor(d / 250))] += 1;
  console.log(`# 200 clients, restart took ${readyAt - stopAt} ms (SIGTERM to ready)`);
  console.log(`# first delay after 1012 (ms): ${stats(firstDelays)}; per 250 ms: ${buckets.join(" ")}`);
  console.log(`# reconnected after ready (ms): ${stats(back)}`);
  console.log(`# attempts per client: ${stats(attempts)}`);
  // Full jitter over a 2 s window: 200 uniform draws cover it (a failure here means no jitter).
  assert.ok(Math.min(...firstDelays) < 500 && Math.max(...firstDelays) > 1500, "first delays spread over the window");
  assert.ok(buckets.every((count) => count < n / 2), "no bucket holds half the fleet");
  for (const c of fleet) c.kuda.close();
});
