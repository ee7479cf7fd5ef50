/**
 * A pool of reusable byte buffers for READ replies and WRITE payloads.
 *
 * @module
 */

/**
 * Reuses READ reply buffers once they have been written. Fresh large buffers cost a zero-fill,
 * page faults and GC work on every request; with steady request sizes the pool makes that a
 * one-off. One pool may be shared by all connections of a server; it holds at most `maxBytes`
 * of idle buffers.
 */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #bytes = 0;
  #maxBytes: number;

  /** Holds at most `maxBytes` of idle buffers. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Buffers handed out from the pool / freshly allocated (for logs and benchmarks). */
  readonly stats = { reused: 0, allocated: 0 };

  /** A buffer of exactly `size` bytes with unspecified contents. */
  take(size: number): Uint8Array {
    const b = this.#free.get(size)?.pop();
    if (b === undefined) {
      this.stats.allocated++;
      return new Uint8Array(size);
    }
    this.stats.reused++;
    this.#bytes -= size;
    return b;
  }

  /** Returns a buffer for reuse (dropped if the pool is full). */
  give(b: Uint8Array): void {
    if (this.#bytes + b.length > this.#maxBytes) return;
    let list = this.#free.get(b.length);
    if (list === undefined) {
      list = [];
      this.#free.set(b.length, list);
    }
    list.push(b);
    this.#bytes += b.length;
  }
}
