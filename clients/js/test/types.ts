// Compiled by `tsc` (never run): the SDK's types as an app uses them, including section 7 of the
// contract. A wrong or missing type here fails the type check in CI.
import { Kuda, KudaError, localStorageCursorStore, type ChannelFrame, type ConnectionState, type Subscription } from "../src/index.js";
import { KudaProvider, useChannel, useConnectionState, usePresence } from "../react/index.js";

declare const accessToken: string;
declare const WebSocketImpl: new (url: string, protocols?: string | string[]) => WebSocket;

async function section7(): Promise<void> {
  const kuda = new Kuda({ url: "http://host:port", getToken: async () => accessToken, WebSocket: WebSocketImpl });
  kuda.on("state", (s) => {
    const state: ConnectionState = s;
    void state;
  });
  const sub: Subscription = kuda.subscribe("user:42", (event) => void event, { since: 0 });
  await kuda.connect();
  const message: { id: number; body: string } = await kuda.send("ride:17:chat", "hi");
  void message;
  sub.unsubscribe();
  kuda.close();
}

async function more(kuda: Kuda): Promise<void> {
  kuda.on("state", (state, info) => {
    if (state === "closed" && info.reason === "unauthorized") return;
    if (state === "disconnected") void [info.delayMs?.toFixed(), info.status === 429];
    void info.code;
  });
  kuda.on("unauthorized", (err: KudaError) => void [err.code, err.cause]);
  const users: number[] = await kuda.presence("ride:17:chat");
  void users;
  const page = await kuda.fetchEvents<{ id: number }>("ride:17", { since: 3, limit: 10 });
  void page.items[0]?.data.id;
  void page.next_since;
  kuda.subscribe<{ body: string }>("ride:17:chat", (frame) => {
    if (frame.type === "reset") void frame.seq;
    else void frame.data.body;
  }, { onState: (state, info) => void [state, info.code], onReset: (f) => void f.channel });
  const ticketed = new Kuda({ url: "https://api", getToken: () => null, auth: "ticket", cursorStore: localStorageCursorStore() });
  void ticketed;
  // @ts-expect-error: a state outside the four
  const bad: ConnectionState = "open";
  void bad;
}

function Chat({ rideId }: { rideId: number }): number {
  const state: ConnectionState = useConnectionState();
  const messages = useChannel(`ride:${rideId}:chat`, (list: string[], frame: ChannelFrame<{ body: string }>) =>
    frame.type === "event" && frame.event === "message.created" ? [...list, frame.data.body] : list, [] as string[]);
  const present: readonly number[] = usePresence(`ride:${rideId}:chat`);
  void state;
  return messages.length + present.length;
}

void section7;
void more;
void Chat;
void KudaProvider;
