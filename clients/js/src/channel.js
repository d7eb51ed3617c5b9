import { reportError } from "./emitter.js";

/**
 * One channel in the client's registry: the per-subscription state machine, the seq bookkeeping
 * that delivers each durable event once and in order, and the listeners (reference counted: one
 * server subscription however many times the app subscribes).
 *
 * States: "pending" (waiting for a connection) -> "subscribing" (op sent) -> "subscribed" (live),
 * with "recovering" while events are fetched over REST (a gap, or `recovered: false`); terminal:
 * "failed" (the server refused: forbidden, not_found...), "revoked" (access lost), and
 * "unsubscribed" (the app let go). Every transition carries `{previous, code?, reason?}`.
 */
export class Channel {
  /**
   * @param {import("./kuda.js").Kuda} client
   * @param {string} name
   */
  constructor(client, name) {
    this.client = client;
    this.name = name;
    /** @type {Set<Entry>} */
    this.entries = new Set();
    this.state = "pending";
    /** @type {{previous: string, code?: number|string, reason?: string}} */
    this.info = { previous: "pending" };
    /** Last seq delivered on this channel (undefined: none yet and no cursor). */
    this.last = undefined;
    /** Early events waiting for the ones before them, by seq. */
    this.held = new Map();
    this.live = false;
    this.filling = false;
    /** Bumped whenever the server-side subscription is replaced, to drop stale async work. */
    this.generation = 0;
    this.graceTimer = undefined;
    this.loaded = undefined; // promise of the cursor read
    this.terminal = false;
  }

  /** Read the stored cursor once, before the first subscribe. */
  load() {
    if (!this.loaded) {
      this.loaded = Promise.resolve()
        .then(() => this.client._cursors.get(this.name))
        .then(
          (seq) => {
            if (Number.isSafeInteger(seq) && seq >= 0 && this.last === undefined) this.last = seq;
          },
          () => {},
        );
    }
    return this.loaded;
  }

  add(entry) {
    this.entries.add(entry);
    if (this.graceTimer !== undefined) {
      this.client._clock.clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
    }
    if (entry.since !== undefined) {
      const fresh = this.state === "pending" && !this.delivered;
      if (fresh && (this.last === undefined || entry.since < this.last)) {
        this.last = entry.since; // not subscribed yet: ask the server from the earliest since
        entry.after = entry.since;
      } else if (this.last !== undefined && entry.since < this.last) {
        void this.catchUp(entry); // already live further on: replay this listener alone over REST
      } else {
        entry.after = entry.since;
      }
    } else {
      entry.after = this.last;
    }
  }

  remove(entry) {
    if (!this.entries.delete(entry)) return;
    entry.closed = true;
    if (this.entries.size === 0 && !this.terminal) {
      this.graceTimer = this.client._clock.setTimeout(() => {
        this.graceTimer = undefined;
        if (this.entries.size === 0) this.client._dropChannel(this);
      }, this.client._options.unsubscribeGraceMs);
    }
  }

  transition(state, details = {}) {
    if (this.state === state && details.code === undefined) return;
    const info = { previous: this.state, ...details };
    this.state = state;
    this.info = info;
    for (const entry of [...this.entries]) {
      if (entry.onState) safeCall(entry.onState, state, info);
    }
  }

  /** Build the subscribe frame for a fresh socket. */
  subscribeFrame() {
    this.generation += 1;
    this.held.clear();
    this.filling = false;
    const frame = { op: "subscribe", channel: this.name };
    if (this.last !== undefined) frame.since = this.last;
    this.transition("subscribing");
    return frame;
  }

  socketClosed(code, reason) {
    this.generation += 1;
    this.held.clear();
    this.filling = false;
    if (!this.terminal) this.transition("pending", { code, reason });
  }

  onSubscribed(frame) {
    if (typeof frame.seq !== "number") {
      this.live = true;
      this.transition("subscribed");
      return;
    }
    const head = frame.seq;
    if (frame.recovered === false) {
      // More than the socket replays (or older than retention): page the REST replay up to the
      // ack's seq; only if that cannot recover either, tell the listeners to refetch.
      this.transition("recovering", { reason: "not recovered by the socket" });
      void this.fill(head, true);
      return;
    }
    if (this.last === undefined) this.setLast(head);
    this.transition("subscribed");
    if (head > this.last) void this.fill(head, false);
    else this.drain();
  }

  /** A durable or ephemeral event frame from the socket (or a REST page). */
  onEvent(frame) {
    if (typeof frame.seq !== "number") {
      // Ephemeral (typing, presence.*, the live-only `rides`): straight through, never stored.
      if (this.state === "subscribed" || this.state === "recovering") this.deliver(frame);
      return;
    }
    if (this.last !== undefined && frame.seq <= this.last) return; // already delivered
    if (this.last === undefined || frame.seq !== this.last + 1) {
      this.held.set(frame.seq, frame);
      // A hole while live: fill it at once (replay and the subscribe ack arrive in order, so a
      // hole before the ack is not one yet).
      if (this.state === "subscribed" && this.last !== undefined && !this.filling) {
        void this.fill(Math.min(...this.held.keys()) - 1, false);
      }
      return;
    }
    this.apply(frame);
    this.drain();
  }

  apply(frame) {
    this.setLast(frame.seq);
    this.delivered = true;
    this.deliver(frame);
  }

  setLast(seq) {
    this.last = seq;
    try {
      const done = this.client._cursors.set(this.name, seq);
      if (done && typeof done.catch === "function") done.catch(() => {});
    } catch {
      // a failing cursor store must not stop delivery
    }
  }

  drain() {
    for (;;) {
      const next = this.held.get(this.last + 1);
      if (!next) break;
      this.held.delete(next.seq);
      this.apply(next);
    }
    for (const seq of this.held.keys()) if (seq <= this.last) this.held.delete(seq);
    if (this.held.size > 0 && this.state === "subscribed" && !this.filling) {
      void this.fill(Math.min(...this.held.keys()) - 1, false);
    }
  }

  deliver(frame) {
    for (const entry of [...this.entries]) {
      if (entry.catching) {
        entry.queue.push(frame);
        continue;
      }
      if (typeof frame.seq === "number") {
        if (entry.after !== undefined && frame.seq <= entry.after) continue;
        entry.after = frame.seq;
      }
      safeCall(entry.listener, frame);
    }
  }

  /**
   * Fetch `last+1 .. target` over REST and deliver it. `fromAck`: the socket said
   * `recovered: false` and `target` is the ack's seq.
   */
  async fill(target, fromAck) {
    if (this.filling) return;
    this.filling = true;
    const generation = this.generation;
    const stale = () => generation !== this.generation || this.terminal;
    let unrecoverable = this.last === undefined;
    let tries = 0;
    try {
      while (!unrecoverable && this.last < target) {
        let page;
        try {
          page = await this.client.fetchEvents(this.name, { since: this.last, limit: 1000 });
        } catch (err) {
          if (stale()) return;
          tries += 1;
          if (err && (err.code === "forbidden" || err.code === "not_found") || tries >= 3) {
            unrecoverable = true;
            break;
          }
          await this.client._sleep(500 * 2 ** tries);
          if (stale()) return;
          continue;
        }
        if (stale()) return;
        if (page.recovered === false) {
          unrecoverable = true;
          break;
        }
        tries = 0;
        const before = this.last;
        for (const item of page.items) {
          if (item.seq === this.last + 1) this.apply(item);
        }
        if (this.last === before) unrecoverable = true; // the server has nothing more to give
      }
      if (unrecoverable) {
        const seq = Math.max(target, this.last ?? 0);
        this.setLast(seq);
        for (const entry of this.entries) entry.after = Math.max(entry.after ?? 0, seq);
        this.deliverReset(seq, fromAck ? "not_recovered" : "gap");
      }
    } finally {
      if (!stale()) {
        this.filling = false;
        if (this.state === "recovering") this.transition("subscribed");
        this.drain();
      }
    }
  }

  deliverReset(seq, reason) {
    const frame = { type: "reset", channel: this.name, seq, reason };
    for (const entry of [...this.entries]) {
      if (entry.onReset) safeCall(entry.onReset, frame);
      safeCall(entry.listener, frame);
    }
  }

  /** A listener that joined with a `since` behind the channel: replay to it alone over REST. */
  async catchUp(entry) {
    entry.catching = true;
    entry.queue = [];
    let since = entry.since;
    const target = this.last;
    try {
      while (since < target && !entry.closed) {
        const page = await this.client.fetchEvents(this.name, { since, limit: 1000 });
        if (page.recovered === false) {
          entry.after = target;
          const frame = { type: "reset", channel: this.name, seq: target, reason: "not_recovered" };
          if (entry.onReset) safeCall(entry.onReset, frame);
          safeCall(entry.listener, frame);
          break;
        }
        for (const item of page.items) {
          if (item.seq > since && item.seq <= target && !entry.closed) {
            entry.after = since = item.seq;
            safeCall(entry.listener, item);
          }
        }
        if (page.next_since == null) break;
      }
    } catch {
      entry.after = target;
      const frame = { type: "reset", channel: this.name, seq: target, reason: "gap" };
      if (entry.onReset) safeCall(entry.onReset, frame);
      safeCall(entry.listener, frame);
    } finally {
      entry.catching = false;
      const queued = entry.queue;
      entry.queue = [];
      if (entry.after === undefined || entry.after < target) entry.after = target;
      for (const frame of queued) {
        if (entry.closed) break;
        if (typeof frame.seq === "number") {
          if (frame.seq <= entry.after) continue;
          entry.after = frame.seq;
        }
        safeCall(entry.listener, frame);
      }
    }
  }

  /** Terminal: refused by the server or revoked. */
  end(state, code, reason) {
    this.terminal = true;
    this.generation += 1;
    this.held.clear();
    this.transition(state, { code, reason });
  }
}

function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    reportError(err);
  }
}

/**
 * @typedef {object} Entry
 * @property {(frame: object) => void} listener
 * @property {number | undefined} since
 * @property {number | undefined} after last seq handed to this listener
 * @property {(state: string, info: object) => void} [onState]
 * @property {(frame: object) => void} [onReset]
 * @property {boolean} [closed]
 * @property {boolean} [catching]
 * @property {object[]} [queue]
 */
