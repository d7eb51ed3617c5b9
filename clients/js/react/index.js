// React bindings for the Kuda client, built on useSyncExternalStore. Correct under StrictMode: the
// provider's connection is reference counted and released a tick late, so a mount/unmount/mount
// opens one socket; hooks' subscriptions go through the client's reference-counted registry.
import { createContext, createElement, useContext, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";

import { Kuda } from "../src/index.js";

const KudaContext = createContext(null);
const holds = new WeakMap();

/** Keep a client connected while someone holds it; the last release closes it a tick later. */
function retain(kuda) {
  const hold = holds.get(kuda) ?? { count: 0, timer: undefined };
  holds.set(kuda, hold);
  hold.count += 1;
  if (hold.timer !== undefined) {
    clearTimeout(hold.timer);
    hold.timer = undefined;
  }
  if (hold.count === 1 && kuda.state !== "connected" && kuda.state !== "connecting") {
    kuda.connect().catch(() => {}); // failures surface as states ("closed" + reason "unauthorized")
  }
  return () => {
    hold.count -= 1;
    if (hold.count === 0) {
      hold.timer = setTimeout(() => {
        hold.timer = undefined;
        if (hold.count === 0) kuda.close();
      }, 0);
    }
  };
}

/**
 * Provides a Kuda client to the tree: `client` (made by the app) or `options` (the provider makes
 * one). With `manage` (default true) the provider connects on mount and closes on unmount.
 */
export function KudaProvider({ client, options, manage = true, children }) {
  const [own] = useState(() => (client ? null : new Kuda(options)));
  const kuda = client ?? own;
  useEffect(() => (manage ? retain(kuda) : undefined), [kuda, manage]);
  return createElement(KudaContext.Provider, { value: kuda }, children);
}

export function useKuda() {
  const kuda = useContext(KudaContext);
  if (!kuda) throw new Error("useKuda: no <KudaProvider> above this component");
  return kuda;
}

/** "connecting" | "connected" | "disconnected" | "closed". */
export function useConnectionState() {
  const kuda = useKuda();
  const subscribe = useMemo(() => (notify) => kuda.on("state", notify), [kuda]);
  const get = () => kuda.state;
  return useSyncExternalStore(subscribe, get, get);
}

function channelStore(kuda, channel, initial, reducerRef, since) {
  let state = initial;
  let last;
  let sub;
  const listeners = new Set();
  return {
    subscribe(notify) {
      listeners.add(notify);
      if (!sub && channel) {
        // Coming back (StrictMode, a remount): go on from the last seq this store reduced.
        sub = kuda.subscribe(
          channel,
          (frame) => {
            if (typeof frame.seq === "number") last = frame.seq;
            state = reducerRef.current(state, frame);
            for (const fn of [...listeners]) fn();
          },
          { since: last ?? since },
        );
      }
      return () => {
        listeners.delete(notify);
        if (listeners.size === 0 && sub) {
          sub.unsubscribe();
          sub = undefined;
        }
      };
    },
    getSnapshot: () => state,
  };
}

/**
 * The state reduced from a channel's frames: `reducer(state, frame)` gets each event once, in seq
 * order, and `{type: "reset"}` when the app must refetch. A new channel starts from `initialState`.
 */
export function useChannel(channel, reducer, initialState, options = {}) {
  const kuda = useKuda();
  const reducerRef = useRef(reducer);
  useEffect(() => {
    reducerRef.current = reducer;
  });
  // eslint-disable-next-line react-hooks/exhaustive-deps -- a store per (client, channel)
  const store = useMemo(() => channelStore(kuda, channel, initialState, reducerRef, options.since), [kuda, channel]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

const NONE = Object.freeze([]);

function presenceStore(kuda, channel) {
  let users = NONE;
  let watch;
  const listeners = new Set();
  return {
    subscribe(notify) {
      listeners.add(notify);
      if (!watch && channel) {
        watch = kuda.watchPresence(channel, (list) => {
          users = Object.freeze(list);
          for (const fn of [...listeners]) fn();
        });
      }
      return () => {
        listeners.delete(notify);
        if (listeners.size === 0 && watch) {
          watch.unsubscribe();
          watch = undefined;
        }
      };
    },
    getSnapshot: () => users,
  };
}

/** The ids of the users present on a chat channel (sorted), kept live. */
export function usePresence(channel) {
  const kuda = useKuda();
  const store = useMemo(() => presenceStore(kuda, channel), [kuda, channel]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}
