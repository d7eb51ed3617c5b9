import assert from "node:assert/strict";
import { test } from "node:test";

import React from "react";
import TestRenderer from "react-test-renderer";

import { KudaProvider, useChannel, useConnectionState, usePresence } from "../react/index.js";
import { autoSubscribe, fakeClient, settle } from "./helpers/setup.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const h = React.createElement;
const { act } = TestRenderer;

const reducer = (list, frame) => (frame.type === "event" && frame.seq ? [...list, frame.seq] : frame.type === "reset" ? ["reset"] : list);

function App({ channel, seen }) {
  const state = useConnectionState();
  const seqs = useChannel(channel, reducer, []);
  const users = usePresence("ride:9:chat");
  seen.push({ state, seqs, users });
  return h("p", null, `${state} ${seqs.join(",")} ${users.join(",")}`);
}

test("StrictMode: one connection, one server subscription per channel, nothing leaked on unmount", async () => {
  const ctx = fakeClient();
  ctx.server.append("ride:1", 2);
  autoSubscribe(ctx.server);
  const inner = ctx.server.onFrame;
  ctx.server.onFrame = (socket, frame) => {
    if (frame.op === "presence") queueMicrotask(() => socket.push({ type: "presence", channel: frame.channel, users: [7, 3], id: frame.id }));
    else inner(socket, frame);
  };
  const seen = [];
  let root;
  await act(async () => {
    root = TestRenderer.create(h(React.StrictMode, null, h(KudaProvider, { client: ctx.kuda }, h(App, { channel: "ride:1", seen }))));
    await settle();
  });
  assert.equal(ctx.server.sockets.length, 1, "one WebSocket despite StrictMode's double effects");
  const socket = ctx.server.last;
  await act(async () => {
    socket.accept();
    await settle(10);
  });
  assert.equal(root.toJSON().children.join(""), "connected  3,7");
  assert.deepEqual(socket.ops("subscribe").map((f) => f.channel).sort(), ["ride:1", "ride:9:chat"]);
  await act(async () => {
    for (const ev of ctx.server.append("ride:1", 2)) socket.push(ev);
    socket.push(ctx.server.event("ride:1", 3)); // duplicate
    socket.push({ type: "event", channel: "ride:9:chat", event: "presence.joined", data: { user_id: 5 }, at: "" });
    await settle();
  });
  assert.equal(root.toJSON().children.join(""), "connected 3,4 3,5,7");
  assert.deepEqual(ctx.kuda.stats().listeners, 2, "one listener per hook, not two");

  // Switching channel: the old one is released after the grace period; the new one starts fresh.
  await act(async () => {
    root.update(h(React.StrictMode, null, h(KudaProvider, { client: ctx.kuda }, h(App, { channel: "ride:2", seen }))));
    await settle();
  });
  await act(async () => {
    await ctx.clock.advance(2000);
  });
  assert.deepEqual(socket.ops("unsubscribe").map((f) => f.channel), ["ride:1"]);
  assert.deepEqual(root.toJSON().children.join(""), "connected  3,5,7");

  await act(async () => {
    root.unmount();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await settle();
  });
  assert.equal(ctx.kuda.state, "closed", "the provider closes the client it manages");
  assert.deepEqual(ctx.kuda.stats(), { channels: 0, listeners: 0, pending: 0 });
});

test("useChannel keeps its state and sends no duplicate across a StrictMode remount", async () => {
  const ctx = fakeClient();
  autoSubscribe(ctx.server);
  const seen = [];
  function Feed() {
    const seqs = useChannel("user:42", reducer, []);
    seen.push(seqs);
    return h("p", null, seqs.join(","));
  }
  let root;
  await act(async () => {
    root = TestRenderer.create(h(React.StrictMode, null, h(KudaProvider, { client: ctx.kuda }, h(Feed))));
    await settle();
  });
  const socket = ctx.server.last;
  await act(async () => {
    socket.accept();
    await settle(10);
    for (const ev of ctx.server.append("user:42", 3)) socket.push(ev);
    await settle();
  });
  assert.equal(root.toJSON().children.join(""), "1,2,3");
  assert.equal(socket.ops("subscribe").length, 1);
  await act(async () => root.unmount());
});
