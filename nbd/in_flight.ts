/**
 * The per-connection in-flight budget: how many requests, and how many payload bytes, may be
 * in flight at once. When it is spent the connection stops reading its socket, which is the
 * backpressure a client sees.
 *
 * @module
 */

/** Bounds requests in flight (count and payload bytes) on one connection. */
export class InFlightBudget {
  #count = 0;
  #bytes = 0;
  #maxCount: number;
  #maxBytes: number;
  #waiters: (() => void)[] = [];
  #idle: (() => void)[] = [];

  /** At most `maxCount` requests and `maxBytes` payload bytes at once. */
  constructor(maxCount: number, maxBytes: number) {
    this.#maxCount = maxCount;
    this.#maxBytes = maxBytes;
  }

  /** Requests currently holding budget. */
  get count(): number {
    return this.#count;
  }

  #fits(bytes: number): boolean {
    // One request may always run, however large, so a big request cannot deadlock.
    return this.#count === 0 ||
      (this.#count < this.#maxCount && this.#bytes + bytes <= this.#maxBytes);
  }

  /** Takes budget at once if it fits (the common case, with no promise to wait on). */
  tryAcquire(bytes: number): boolean {
    if (!this.#fits(bytes)) return false;
    this.#count++;
    this.#bytes += bytes;
    return true;
  }

  /** Waits until `bytes` fit, then takes them (and one request slot). */
  async acquire(bytes: number): Promise<void> {
    while (!this.#fits(bytes)) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#count++;
    this.#bytes += bytes;
  }

  /** Gives back what one request took. */
  release(bytes: number): void {
    this.#count--;
    this.#bytes -= bytes;
    const w = this.#waiters;
    this.#waiters = [];
    for (const resolve of w) resolve();
    if (this.#count === 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }

  /** Resolves when no request holds budget. */
  idle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}
