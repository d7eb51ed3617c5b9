/**
 * Cursor stores keep the last seq delivered per channel, so that a client started again (a tab
 * reopened, an app killed for hours) subscribes with `since` and misses nothing.
 *
 * A store has `get(channel)` (a number, undefined, or a promise of either) and `set(channel, seq)`.
 */

/** The default: cursors live as long as the Kuda instance. */
export function memoryCursorStore() {
  const seqs = new Map();
  return {
    get: (channel) => seqs.get(channel),
    set: (channel, seq) => void seqs.set(channel, seq),
    delete: (channel) => void seqs.delete(channel),
  };
}

/**
 * Browsers: cursors in `localStorage` (or any Storage: sessionStorage), one key per channel.
 * @param {{storage?: Storage, prefix?: string}} [options]
 */
export function localStorageCursorStore(options = {}) {
  const storage = options.storage ?? globalThis.localStorage;
  const prefix = options.prefix ?? "kuda:cursor:";
  if (!storage) throw new TypeError("localStorageCursorStore: no localStorage in this runtime");
  return {
    get(channel) {
      try {
        const value = Number.parseInt(storage.getItem(prefix + channel) ?? "", 10);
        return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
      } catch {
        return undefined; // storage disabled (privacy mode): behave as a memory store would
      }
    },
    set(channel, seq) {
      try {
        storage.setItem(prefix + channel, String(seq));
      } catch {
        // quota exceeded or storage disabled: the cursor is only an optimisation across restarts
      }
    },
    delete(channel) {
      try {
        storage.removeItem(prefix + channel);
      } catch {
        // as above
      }
    },
  };
}

/**
 * React Native: cursors in AsyncStorage (`@react-native-async-storage/async-storage`, passed in so
 * that this package has no dependency). Writes are coalesced: at most one write per channel in
 * flight, the latest seq wins.
 * @param {{getItem(k: string): Promise<string|null>, setItem(k: string, v: string): Promise<void>, removeItem(k: string): Promise<void>}} asyncStorage
 * @param {{prefix?: string}} [options]
 */
export function asyncStorageCursorStore(asyncStorage, options = {}) {
  const prefix = options.prefix ?? "kuda:cursor:";
  const latest = new Map();
  const writing = new Set();

  async function flush(channel) {
    writing.add(channel);
    try {
      let written;
      while (latest.get(channel) !== written) {
        written = latest.get(channel);
        if (written === undefined) await asyncStorage.removeItem(prefix + channel);
        else await asyncStorage.setItem(prefix + channel, String(written));
      }
    } catch {
      // storage failure: the cursor is only an optimisation across restarts
    } finally {
      writing.delete(channel);
    }
  }

  return {
    async get(channel) {
      if (latest.has(channel)) return latest.get(channel);
      try {
        const value = Number.parseInt((await asyncStorage.getItem(prefix + channel)) ?? "", 10);
        return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
      } catch {
        return undefined;
      }
    },
    set(channel, seq) {
      latest.set(channel, seq);
      if (!writing.has(channel)) void flush(channel);
    },
    delete(channel) {
      latest.set(channel, undefined);
      if (!writing.has(channel)) void flush(channel);
    },
  };
}
