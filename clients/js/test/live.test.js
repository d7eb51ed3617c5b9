// The SDK against real `kuda serve` processes: two instances on one database and Redis.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import WebSocket from "ws";

import { Kuda } from "../src/index.js";
import { Api, Cluster, waitFor } from "./helpers/cluster.js";

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
