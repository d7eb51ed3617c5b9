import { Kuda } from "../../src/index.js";
import { FakeClock, FakeServer, fakeToken, settle } from "./fake.js";

/** A client wired to a fake server and clock. `random` defaults to 0.5 so delays are predictable. */
export function fakeClient(options = {}) {
  const clock = options.clock ?? new FakeClock();
  const server = options.server ?? new FakeServer(clock);
  const tokens = [];
  const getToken =
    options.getToken ??
    (async () => {
      const token = fakeToken(clock, options.tokenLifetimeS ?? 900, { n: tokens.length });
      tokens.push(token);
      return token;
    });
  const states = [];
  const kuda = new Kuda({
    url: "http://kuda.test:8000",
    getToken,
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    clock,
    random: options.random ?? (() => 0.5),
    watchEnvironment: false,
    ...options.kuda,
  });
  kuda.on("state", (state, info) => states.push({ state, ...info }));
  return { kuda, clock, server, tokens, states };
}

/** Connect and accept the first socket; returns the socket. */
export async function connected(ctx, welcome) {
  const done = ctx.kuda.connect();
  await settle();
  const socket = ctx.server.last;
  socket.accept(welcome);
  await done;
  await settle();
  return socket;
}

/** Answer every subscribe on a socket from the fake server's logs (replay, then the ack). */
export function autoSubscribe(server, { recovered } = {}) {
  server.onFrame = (socket, frame) => {
    if (frame.op !== "subscribe") return;
    queueMicrotask(() => {
      const log = server.logs.get(frame.channel) ?? [];
      const head = log.length;
      let ok = true;
      if (frame.since != null) {
        if (frame.since > head || head - frame.since > 1000 || recovered === false) ok = false;
        else for (const ev of log.slice(frame.since)) socket.push(ev);
      }
      socket.push({ type: "subscribed", channel: frame.channel, seq: head, recovered: ok, id: frame.id });
    });
  };
}

export { settle };

/** Advance the fake clock until the client opens its next socket; returns it. */
export async function nextSocket(ctx, maxMs = 60000) {
  const count = ctx.server.sockets.length;
  for (let waited = 0; waited <= maxMs; waited += 100) {
    if (ctx.server.sockets.length > count) return ctx.server.last;
    await ctx.clock.advance(100);
  }
  throw new Error("no new socket");
}
