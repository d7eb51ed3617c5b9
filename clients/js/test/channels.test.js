import assert from "node:assert/strict";
import { test } from "node:test";

import { asyncStorageCursorStore, localStorageCursorStore } from "../src/index.js";
import { FakeClock, FakeServer } from "./helpers/fake.js";
import { autoSubscribe, connected, fakeClient, nextSocket, settle } from "./helpers/setup.js";

const seqs = (frames) => frames.filter((f) => f.type === "event").map((f) => f.seq);

test("each seq once and in order: drop the old, hold the early, fill a gap at once over REST", async () => {
  const ctx = fakeClient();
  ctx.server.append("ride:1", 10);
  autoSubscribe(ctx.server);
  const got = [];
  ctx.kuda.subscribe("ride:1", (f) => got.push(f));
  const socket = await connected(ctx);
  await settle();
  assert.deepEqual(socket.ops("subscribe").map((f) => f.since), [undefined], "no cursor: no since");
  const sub = ctx.server.append("ride:1", 5); // seq 11..15
  socket.push(sub[0]);
  socket.push(sub[0]); // duplicate
  socket.push(ctx.server.event("ride:1", 9)); // old
  socket.push(sub[3]); // 14 early: held, gap 12..13 fetched over REST at once
  await settle(10);
  assert.deepEqual(seqs(got), [11, 12, 13, 14, 15], "the REST page brought 12..15");
  const replay = ctx.server.fetches.filter((f) => f.url.pathname.endsWith("/events"));
  assert.equal(replay.length, 1);
  assert.equal(replay[0].url.searchParams.get("since"), "11");
  socket.push(sub[2]); // 13 again
  socket.push(sub[4]);
  await settle();
  assert.deepEqual(seqs(got), [11, 12, 13, 14, 15]);
  ctx.kuda.close();
});

test("an event arriving early while a gap is filled waits its turn", async () => {
  const ctx = fakeClient();
  autoSubscribe(ctx.server);
  const got = [];
  ctx.kuda.subscribe("ride:1", (f) => got.push(f), { since: 0 });
  const socket = await connected(ctx);
  const evs = ctx.server.append("ride:1", 6);
  socket.push(evs[0]);
  socket.push(evs[4]);
  socket.push(evs[5]);
  socket.push(evs[3]);
  await settle(10);
  assert.deepEqual(seqs(got), [1, 2, 3, 4, 5, 6]);
  ctx.kuda.close();
});

test("reconnects resubscribe with since = the last seq delivered; the replay is not repeated", async () => {
  const ctx = fakeClient();
  ctx.server.append("user:42", 3);
  autoSubscribe(ctx.server);
  const got = [];
  const states = [];
  const sub = ctx.kuda.subscribe("user:42", (f) => got.push(f), { since: 1, onState: (s, info) => states.push([s, info.code]) });
  let socket = await connected(ctx);
  await settle();
  assert.deepEqual(seqs(got), [2, 3]);
  assert.equal(sub.state, "subscribed");
  socket.serverClose(1012, "restart");
  await settle();
  assert.equal(sub.state, "pending");
  assert.deepEqual(states.at(-1), ["pending", 1012], "the transition carries the close code");
  ctx.server.append("user:42", 2); // 4, 5 while away
  await ctx.clock.advance(2000);
  socket = ctx.server.last;
  socket.accept();
  await settle(10);
  assert.deepEqual(socket.ops("subscribe").map((f) => f.since), [3]);
  socket.push(ctx.server.event("user:42", 5)); // a late duplicate of the replay
  await settle();
  assert.deepEqual(seqs(got), [2, 3, 4, 5]);
  assert.deepEqual(states.map((s) => s[0]), ["subscribing", "subscribed", "pending", "subscribing", "subscribed"]);
  ctx.kuda.close();
});

test("recovered:false is filled from the REST replay when it can be, else a reset tells the app to refetch", async () => {
  const ctx = fakeClient();
  ctx.server.append("ride:2", 2500);
  autoSubscribe(ctx.server);
  const got = [];
  ctx.kuda.subscribe("ride:2", (f) => got.push(f), { since: 100 });
  let socket = await connected(ctx);
  await settle(40);
  const s = seqs(got);
  assert.equal(s.length, 2400);
  assert.ok(s.every((v, i) => v === 101 + i), "every seq once, in order, across REST pages");
  assert.ok(!got.some((f) => f.type === "reset"));
  // Too old for the REST replay too: reset.
  ctx.server.retention = 4000;
  ctx.server.append("ride:2", 2000); // head 4500, client at 2500
  socket.serverClose(1006);
  await ctx.clock.advance(1000);
  socket = ctx.server.last;
  const resets = [];
  ctx.kuda.subscribe("ride:2", () => {}, { onReset: (f) => resets.push(f) });
  socket.accept();
  await settle(20);
  const reset = got.filter((f) => f.type === "reset");
  assert.equal(reset.length, 1);
  assert.equal(reset[0].seq, 4500);
  assert.equal(resets.length, 1);
  const live = ctx.server.append("ride:2", 1)[0];
  socket.push(live);
  await settle();
  assert.equal(got.at(-1).seq, 4501, "live events go on after the reset");
  ctx.kuda.close();
});

test("a reference-counted registry: one server subscription, a grace period, no leaks across reconnects", async () => {
  const ctx = fakeClient();
  autoSubscribe(ctx.server);
  const a = [];
  const b = [];
  const s1 = ctx.kuda.subscribe("ride:3", (f) => a.push(f));
  const s2 = ctx.kuda.subscribe("ride:3", (f) => b.push(f));
  let socket = await connected(ctx);
  await settle();
  assert.equal(socket.ops("subscribe").length, 1);
  s1.unsubscribe();
  s1.unsubscribe(); // idempotent
  await ctx.clock.advance(5000);
  assert.equal(socket.ops("unsubscribe").length, 0, "still one listener");
  s2.unsubscribe();
  await ctx.clock.advance(500);
  const s3 = ctx.kuda.subscribe("ride:3", (f) => b.push(f)); // a remount within the grace period
  await ctx.clock.advance(5000);
  assert.equal(socket.ops("unsubscribe").length, 0, "no churn on a remount");
  assert.equal(socket.ops("subscribe").length, 1);
  for (let i = 0; i < 3; i += 1) {
    socket.serverClose(1006);
    socket = await nextSocket(ctx);
    socket.accept();
    await settle();
  }
  const ev = ctx.server.append("ride:3", 1)[0];
  socket.push(ev);
  await settle();
  assert.equal(b.filter((f) => f.seq === 1).length, 1, "delivered once after three reconnects");
  assert.equal(a.length, 0);
  assert.deepEqual(ctx.kuda.stats(), { channels: 1, listeners: 1, pending: 0 });
  s3.unsubscribe();
  await ctx.clock.advance(1000);
  assert.equal(socket.ops("unsubscribe").length, 1);
  assert.deepEqual(ctx.kuda.stats(), { channels: 0, listeners: 0, pending: 0 });
  ctx.kuda.close();
});

test("ephemeral events pass through; a revoked channel is not resubscribed; a refused one fails with its code", async () => {
  const ctx = fakeClient();
  autoSubscribe(ctx.server);
  const got = [];
  const chat = ctx.kuda.subscribe("ride:4:chat", (f) => got.push(f));
  const rides = ctx.kuda.subscribe("rides", (f) => got.push(f));
  let socket = await connected(ctx);
  await settle();
  socket.push({ type: "event", channel: "ride:4:chat", event: "typing", data: { user_id: 7 }, at: "" });
  socket.push({ type: "event", channel: "rides", event: "ride.created", data: { id: 9 }, at: "" });
  socket.push({ type: "event", channel: "rides", event: "ride.created", data: { id: 9 }, at: "" });
  assert.deepEqual(got.map((f) => f.event), ["typing", "ride.created", "ride.created"]);
  socket.push({ type: "unsubscribed", channel: "ride:4:chat", reason: "forbidden" });
  await settle();
  assert.equal(chat.state, "revoked");
  assert.equal(chat.info.code, "forbidden");
  socket.serverClose(1006);
  await ctx.clock.advance(1000);
  socket = ctx.server.last;
  socket.accept();
  await settle();
  assert.deepEqual(socket.ops("subscribe").map((f) => f.channel), ["rides"]);
  assert.equal(rides.state, "subscribed");

  ctx.server.onFrame = (sock, frame) => {
    if (frame.op === "subscribe") queueMicrotask(() => sock.push({ type: "error", code: "forbidden", message: "Not allowed to read user:43", id: frame.id }));
  };
  const other = ctx.kuda.subscribe("user:43", () => {});
  await settle();
  assert.equal(other.state, "failed");
  assert.equal(other.info.code, "forbidden");
  ctx.kuda.close();
});

test("a second listener with an older since is replayed alone over REST", async () => {
  const ctx = fakeClient();
  ctx.server.append("ride:5", 20);
  autoSubscribe(ctx.server);
  const a = [];
  const b = [];
  ctx.kuda.subscribe("ride:5", (f) => a.push(f), { since: 15 });
  const socket = await connected(ctx);
  await settle();
  ctx.kuda.subscribe("ride:5", (f) => b.push(f), { since: 10 });
  socket.push(ctx.server.append("ride:5", 1)[0]);
  await settle(10);
  assert.deepEqual(seqs(a), [16, 17, 18, 19, 20, 21]);
  assert.deepEqual(seqs(b), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]);
  assert.equal(socket.ops("subscribe").length, 1);
  ctx.kuda.close();
});

test("cursor stores: an app started again resumes from localStorage / AsyncStorage", async () => {
  const memory = new Map();
  const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v), removeItem: (k) => memory.delete(k) };
  const asyncMemory = new Map();
  const asyncStorage = {
    getItem: async (k) => asyncMemory.get(k) ?? null,
    setItem: async (k, v) => void asyncMemory.set(k, v),
    removeItem: async (k) => void asyncMemory.delete(k),
  };
  for (const makeStore of [() => localStorageCursorStore({ storage }), () => asyncStorageCursorStore(asyncStorage)]) {
    const clock = new FakeClock();
    const server = new FakeServer(clock);
    server.append("user:42", 5);
    autoSubscribe(server);
    const first = fakeClient({ clock, server, kuda: { cursorStore: makeStore() } });
    first.kuda.subscribe("user:42", () => {}, { since: 0 });
    await connected(first);
    await settle(10);
    first.kuda.close();
    server.append("user:42", 3);
    // Hours later, a new process:
    const got = [];
    const second = fakeClient({ clock, server, kuda: { cursorStore: makeStore() } });
    second.kuda.subscribe("user:42", (f) => got.push(f));
    const socket = await connected(second);
    await settle(10);
    assert.deepEqual(socket.ops("subscribe").map((f) => f.since), [5]);
    assert.deepEqual(seqs(got), [6, 7, 8]);
    second.kuda.close();
  }
  assert.equal(memory.get("kuda:cursor:user:42"), "8");
  assert.equal(asyncMemory.get("kuda:cursor:user:42"), "8");
});

test("watchPresence: a snapshot after each subscription, then joined/left", async () => {
  const ctx = fakeClient();
  ctx.server.onFrame = (socket, frame) => {
    queueMicrotask(() => {
      if (frame.op === "subscribe") socket.push({ type: "subscribed", channel: frame.channel, seq: 0, recovered: true, id: frame.id });
      if (frame.op === "presence") socket.push({ type: "presence", channel: frame.channel, users: [43, 42], id: frame.id });
    });
  };
  const seen = [];
  const watch = ctx.kuda.watchPresence("ride:6:chat", (users) => seen.push(users));
  const socket = await connected(ctx);
  await settle(10);
  socket.push({ type: "event", channel: "ride:6:chat", event: "presence.joined", data: { user_id: 44 }, at: "" });
  socket.push({ type: "event", channel: "ride:6:chat", event: "presence.left", data: { user_id: 43 }, at: "" });
  assert.deepEqual(seen, [[42, 43], [42, 43, 44], [42, 44]]);
  watch.unsubscribe();
  ctx.kuda.close();
});

test("a subscribe the server failed to process is tried again; a refusal is final", async () => {
  const ctx = fakeClient();
  let failures = 2;
  ctx.server.onFrame = (socket, frame) => {
    if (frame.op !== "subscribe") return;
    queueMicrotask(() => {
      if (failures-- > 0) socket.push({ type: "error", code: failures ? "internal_error" : "bad_request", message: "Could not process op", id: frame.id });
      else socket.push({ type: "subscribed", channel: frame.channel, seq: 0, recovered: true, id: frame.id });
    });
  };
  const sub = ctx.kuda.subscribe("user:42", () => {});
  const socket = await connected(ctx);
  await ctx.clock.advance(10000);
  assert.equal(socket.ops("subscribe").length, 3);
  assert.equal(sub.state, "subscribed");
  ctx.kuda.close();
});
