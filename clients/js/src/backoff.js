/**
 * Full-jitter exponential backoff: the n-th retry waits a uniformly random time in
 * [0, min(maxMs, baseMs * 2^n)] (AWS architecture blog, "Exponential Backoff And Jitter").
 */
export class Backoff {
  /** @param {{baseMs: number, maxMs: number, random: () => number}} options */
  constructor({ baseMs, maxMs, random }) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The ceiling of the next delay. */
  ceiling() {
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The next delay, and one step further up the ladder. */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}
