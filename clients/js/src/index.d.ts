// Types for the Kuda realtime client (hand-written; checked by `tsc` in CI against test/types.ts).

/** The connection state. The terminal `unauthorized` outcome is "closed" with `info.reason === "unauthorized"`. */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

/** What a connection state transition carries. */
export interface StateInfo {
  /** The state before this transition. */
  previous: ConnectionState;
  /** The WebSocket close code that caused it (1006 for a connection lost without one). */
  code?: number;
  /** The close reason, or what the client saw ("no frame for 40 s", "unauthorized", ...). */
  reason?: string;
  /** "disconnected" after a refused handshake: the HTTP status, where the runtime reports it (Node's `ws`, React Native). */
  status?: number;
  /** "disconnected": how long until the next attempt. */
  delayMs?: number;
  /** "connecting": how many attempts failed in a row before this one. */
  attempt?: number;
  /** "connected": the server's connection id. */
  connectionId?: string;
  /** "closed" by `unauthorized`, or a connect attempt that failed: the error. */
  error?: unknown;
}

export type SubscriptionState =
  | "pending"
  | "subscribing"
  | "subscribed"
  | "recovering"
  | "failed"
  | "revoked"
  | "unsubscribed";

export interface SubscriptionInfo {
  previous: SubscriptionState;
  /** A close code (on "pending") or the server's error code (on "failed", "revoked"). */
  code?: number | string;
  reason?: string;
}

/** The server's event frame. Durable events carry `seq`; ephemeral ones (typing, presence.*, `rides`) do not. */
export interface EventFrame<D = any> {
  type: "event";
  channel: string;
  seq?: number;
  event: string;
  data: D;
  at: string;
}

/** Events were lost for good (beyond retention): refetch the state by REST; delivery goes on after `seq`. */
export interface ResetFrame {
  type: "reset";
  channel: string;
  seq: number;
  reason: "not_recovered" | "gap";
}

export type ChannelFrame<D = any> = EventFrame<D> | ResetFrame;

export interface WelcomeFrame {
  type: "welcome";
  connection_id: string;
  user_id: number;
  protocol: number;
  heartbeat_s: number;
  expires_at: string;
}

export interface SubscribeOptions {
  /** The last seq the app has (e.g. from a REST snapshot); default: the cursor store's, else live only. */
  since?: number;
  onState?: (state: SubscriptionState, info: SubscriptionInfo) => void;
  onReset?: (frame: ResetFrame) => void;
}

export interface Subscription {
  readonly channel: string;
  readonly state: SubscriptionState;
  readonly info: SubscriptionInfo;
  /** The last seq handed to this listener. */
  readonly seq: number | undefined;
  /** Idempotent; the server subscription ends after a short grace period once no listener is left. */
  unsubscribe(): void;
}

export type MaybePromise<T> = T | Promise<T>;

export interface CursorStore {
  get(channel: string): MaybePromise<number | undefined>;
  set(channel: string, seq: number): MaybePromise<void>;
  delete?(channel: string): MaybePromise<void>;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface GetTokenContext {
  /**
   * Why the client asks: a new connection, a refresh on the live socket, a REST call, or "expired":
   * the token at hand has expired, or the server refused it (a 4401 close, a handshake refused 401):
   * hand back a new one (refresh it), not the same.
   */
  reason: "connect" | "refresh" | "rest" | "expired";
}

/** The subset of the WebSocket API the client uses (browsers, React Native, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface KudaOptions {
  /** The HTTP base, `http(s)://host[:port][/prefix]`; the socket is `ws(s)://.../ws`. */
  url: string;
  /**
   * An access token, asked for each connection, before expiry and after a 4401. Rejecting (or
   * resolving to nothing) ends the session: state "closed", reason "unauthorized". Throw an error
   * with `retry: true` for a transient failure (offline) to back off and try again instead.
   */
  getToken: (context: GetTokenContext) => Promise<string | null | undefined> | string | null | undefined;
  /** Only where the runtime has no global WebSocket (Node < 22: the `ws` package's class). */
  WebSocket?: WebSocketConstructor | (new (...args: any[]) => any);
  fetch?: typeof fetch;
  /** "subprotocol" (default): `kuda.v1` + `kuda.bearer.<token>`; "ticket": a single-use ws-ticket in the URL. */
  auth?: "subprotocol" | "ticket";
  cursorStore?: CursorStore;
  /** Full-jitter backoff: the n-th retry waits random(0, min(max, base * 2^n)). Defaults 500 and 20000. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** The backoff starts over only after a connection lasted this long (default 10000). */
  stableAfterMs?: number;
  /** After 1012 the client comes back within random(0, this) (default 2000). */
  restartJitterMs?: number;
  /** After 4429 the client waits between half and all of max(this, backoff ceiling) (default 4000). */
  rateLimitedMinMs?: number;
  /** No welcome within this: the attempt is abandoned (default 15000). */
  connectTimeoutMs?: number;
  /** `send` and `presence` reject with code "timeout" after this (default 30000). */
  sendTimeoutMs?: number;
  /** Refresh the token at this fraction of its lifetime (default 0.8). */
  refreshRatio?: number;
  /** The server subscription outlives its last listener by this (default 1000). */
  unsubscribeGraceMs?: number;
  /** Outgoing op pacing, under the server's per-socket limit (defaults 15/s, burst 30). */
  opsPerSecond?: number;
  opsBurst?: number;
  /** Liveness: a `ping` op after this much silence (default heartbeat_s / 2) ... */
  pingAfterMs?: number;
  /** ... and the socket is dead after this much (default 1.5 x heartbeat_s). */
  deadAfterMs?: number;
  /** How often the wall-clock checks run (default 1000). */
  tickMs?: number;
  /** Listen to `online` and `visibilitychange` (default true where they exist). */
  watchEnvironment?: boolean;
  environment?: { addEventListener(type: string, fn: () => void): void; removeEventListener(type: string, fn: () => void): void };
  document?: { visibilityState?: string; addEventListener(type: string, fn: () => void): void; removeEventListener(type: string, fn: () => void): void };
  clock?: Clock;
  random?: () => number;
}

export interface KudaEvents {
  state: (state: ConnectionState, info: StateInfo) => void;
  unauthorized: (error: KudaError) => void;
  welcome: (frame: WelcomeFrame) => void;
  authed: (frame: { type: "authed"; expires_at: string }) => void;
  event: (frame: EventFrame) => void;
  error: (error: KudaError) => void;
}

export interface EventsPage<D = any> {
  items: EventFrame<D>[];
  latest_seq: number;
  recovered: boolean;
  next_since: number | null;
}

export declare class Kuda {
  constructor(options: KudaOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly info: StateInfo;
  readonly welcome: WelcomeFrame | undefined;
  on<K extends keyof KudaEvents>(event: K, listener: KudaEvents[K]): () => void;
  off<K extends keyof KudaEvents>(event: K, listener: KudaEvents[K]): void;
  /**
   * Resolves with the `welcome` frame (after any number of retries), once the server answered the
   * subscriptions made before it (at most 5 s after the welcome), so what the app does next has
   * its events delivered; rejects on close() or unauthorized before a welcome.
   */
  connect(): Promise<WelcomeFrame>;
  close(): void;
  subscribe<D = any>(channel: string, listener: (frame: ChannelFrame<D>) => void, options?: SubscribeOptions): Subscription;
  /** Resolves with the ack's data (the stored message); retried across reconnects with one client_id. */
  send<M = any>(channel: string, body: string, options?: { clientId?: string; timeoutMs?: number }): Promise<M>;
  presence(channel: string, options?: { timeoutMs?: number }): Promise<number[]>;
  typing(channel: string): void;
  watchPresence(channel: string, listener: (users: number[]) => void): { unsubscribe(): void };
  /** Reconnect now if waiting, or check the live socket at once (call it when an app comes to the foreground). */
  reconnectNow(): void;
  request<T = any>(method: string, path: string, body?: unknown, options?: { headers?: Record<string, string> }): Promise<T>;
  fetchEvents<D = any>(channel: string, options?: { since?: number; limit?: number }): Promise<EventsPage<D>>;
  wsTicket(): Promise<string>;
  stats(): { channels: number; listeners: number; pending: number };
}

export declare class KudaError extends Error {
  constructor(code: string, message: string, extra?: { status?: number; details?: unknown; retryAfterS?: number; cause?: unknown });
  /** The server's error code (forbidden, not_found, ...) or the client's (timeout, closed, unauthorized, network). */
  readonly code: string;
  readonly status: number | undefined;
  readonly details: unknown;
  readonly retryAfterS: number | undefined;
  /** For "unauthorized" after getToken failed: what getToken threw. */
  readonly cause?: unknown;
}

export declare function memoryCursorStore(): CursorStore;
export declare function localStorageCursorStore(options?: {
  storage?: { getItem(key: string): string | null; setItem(key: string, value: string): void; removeItem(key: string): void };
  prefix?: string;
}): CursorStore;
export declare function asyncStorageCursorStore(
  asyncStorage: {
    getItem(key: string): Promise<string | null>;
    setItem(key: string, value: string): Promise<void>;
    removeItem(key: string): Promise<void>;
  },
  options?: { prefix?: string },
): CursorStore;

export declare class Backoff {
  constructor(options: { baseMs: number; maxMs: number; random: () => number });
  attempt: number;
  ceiling(): number;
  next(): number;
  reset(): void;
}

export declare function tokenLifetime(token: string): { expMs: number; iatMs: number | undefined } | undefined;
