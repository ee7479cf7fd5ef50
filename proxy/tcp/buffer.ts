/**
 * A bounded byte ring: the send and receive buffers of a connection. Its backing store starts
 * small and doubles on demand up to the capacity, so idle connections cost little and no
 * connection ever holds more than its capacity.
 *
 * @module
 */

/** Backing store of a new ring (grown on demand). */
const INITIAL_BACKING = 4096;

/** Bounded FIFO of bytes with peeking at an offset (for retransmission). */
export class RingBuffer {
  readonly #capacity: number;
  #data: Uint8Array;
  #head = 0;
  #length = 0;

  /** A ring holding at most `capacity` bytes. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) {
      throw new RangeError(
        `Cannot create ring buffer of ${capacity} bytes: need a positive integer`,
      );
    }
    this.#capacity = capacity;
    this.#data = new Uint8Array(Math.min(capacity, INITIAL_BACKING));
  }

  /** Most bytes the ring holds. */
  get capacity(): number {
    return this.#capacity;
  }
  /** Bytes held. */
  get length(): number {
    return this.#length;
  }
  /** Free space. */
  get free(): number {
    return this.#capacity - this.#length;
  }
  /** Bytes allocated for the backing store (for memory accounting). */
  get allocated(): number {
    return this.#data.length;
  }

  /** Frees the backing store when empty (closed connections). */
  release(): void {
    if (this.#length === 0) {
      this.#data = new Uint8Array(0);
      this.#head = 0;
    }
  }

  #grow(need: number): void {
    if (need <= this.#data.length) return;
    let size = Math.max(this.#data.length, 1024);
    while (size < need) size *= 2;
    const next = new Uint8Array(Math.min(size, this.#capacity));
    next.set(this.peek(0, this.#length));
    this.#data = next;
    this.#head = 0;
  }

  /** Appends as much of `bytes` as fits; returns how many were taken. */
  write(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, this.free);
    if (n === 0) return 0;
    this.#grow(this.#length + n);
    const cap = this.#data.length;
    const tail = (this.#head + this.#length) % cap;
    const first = Math.min(n, cap - tail);
    this.#data.set(bytes.subarray(0, first), tail);
    if (n > first) this.#data.set(bytes.subarray(first, n), 0);
    this.#length += n;
    return n;
  }

  /**
   * `len` bytes starting `offset` bytes after the head, without removing them. A view into the
   * ring when contiguous (valid until the next write), otherwise a copy.
   */
  peek(offset: number, len: number): Uint8Array {
    const n = Math.max(0, Math.min(len, this.#length - offset));
    if (n === 0) return new Uint8Array(0);
    const cap = this.#data.length;
    const start = (this.#head + offset) % cap;
    if (start + n <= cap) return this.#data.subarray(start, start + n);
    const out = new Uint8Array(n);
    const first = cap - start;
    out.set(this.#data.subarray(start, cap));
    out.set(this.#data.subarray(0, n - first), first);
    return out;
  }

  /** Drops `n` bytes from the head. */
  consume(n: number): void {
    const k = Math.min(n, this.#length);
    if (k === 0) return;
    this.#head = (this.#head + k) % this.#data.length;
    this.#length -= k;
    if (this.#length === 0) this.#head = 0;
  }

  /** Removes and returns (a copy of) up to `max` bytes from the head. */
  read(max: number): Uint8Array {
    const n = Math.min(max, this.#length);
    const start = this.#head;
    // One copy: a contiguous run is sliced, a wrapped one is already copied by peek.
    const out = start + n <= this.#data.length
      ? this.#data.slice(start, start + n)
      : this.peek(0, n);
    this.consume(out.length);
    return out;
  }
}
