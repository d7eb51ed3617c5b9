/** A minimal event emitter: `on` returns the function that removes the listener. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  on(name, fn) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    const set = this._listeners.get(name);
    if (set && set.delete(fn) && set.size === 0) this._listeners.delete(name);
  }

  emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        reportError(err);
      }
    }
  }

  listenerCount(name) {
    return this._listeners.get(name)?.size ?? 0;
  }
}

/** A listener that throws must not break the client: report it asynchronously, like the DOM does. */
export function reportError(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else setTimeout(() => { throw err; }, 0);
}
