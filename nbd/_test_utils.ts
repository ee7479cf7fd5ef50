/**
 * Test helpers: an in-memory byte pipe so the handshake and transmission phases can be driven
 * without sockets.
 *
 * @module
 */

import type { ByteSink, ByteSource } from "./_io.ts";

/** One direction of an in-memory byte stream. */
export class MemoryPipe implements ByteSource, ByteSink {
  #chunks: Uint8Array[] = [];
  #closed = false;
  #waiters: (() => void)[] = [];
  /** When set, `write` blocks until `unblockWrites()` (to simulate a client not reading). */
  #writeGate: Promise<void> | null = null;
  #openGate: (() => void) | null = null;

  /** Bytes queued and not yet read. */
  get pending(): number {
    let n = 0;
    for (const c of this.#chunks) n += c.length;
    return n;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  async write(p: Uint8Array): Promise<number> {
    if (this.#writeGate !== null) await this.#writeGate;
    if (this.#closed) throw new Deno.errors.BrokenPipe("pipe closed");
    this.#chunks.push(p.slice());
    this.#wake();
    return p.length;
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) return null;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
    const c = this.#chunks[0]!;
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    if (n === c.length) this.#chunks.shift();
    else this.#chunks[0] = c.subarray(n);
    return n;
  }

  /** Reads exactly `n` bytes (throws if the pipe closes first). */
  async readExact(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const k = await this.read(out.subarray(done));
      if (k === null) throw new Error(`pipe closed after ${done} of ${n} bytes`);
      done += k;
    }
    return out;
  }

  /** Ends the stream: readers get `null` once the queue is drained. */
  close(): void {
    this.#closed = true;
    this.#wake();
    this.unblockWrites();
  }

  /** Makes writes hang until {@linkcode MemoryPipe.unblockWrites}. */
  blockWrites(): void {
    this.#writeGate ??= new Promise((r) => (this.#openGate = r));
  }

  /** Releases writes blocked by {@linkcode MemoryPipe.blockWrites}. */
  unblockWrites(): void {
    this.#openGate?.();
    this.#openGate = null;
    this.#writeGate = null;
  }
}

/** Big-endian byte builder for scripted client messages. */
export class Bytes {
  #parts: number[] = [];
  /** One byte. */
  u8(x: number): this {
    this.#parts.push(x & 0xff);
    return this;
  }
  /** Big-endian 16 bits. */
  u16(x: number): this {
    return this.u8(x >>> 8).u8(x);
  }
  /** Big-endian 32 bits. */
  u32(x: number): this {
    return this.u16(x >>> 16).u16(x & 0xffff);
  }
  /** Big-endian 64 bits. */
  u64(x: bigint | number): this {
    const b = BigInt(x);
    return this.u32(Number(b >> 32n)).u32(Number(b & 0xffffffffn));
  }
  /** Bytes as they are. */
  raw(b: Uint8Array): this {
    for (const x of b) this.#parts.push(x);
    return this;
  }
  /** UTF-8 text, no length prefix. */
  str(s: string): this {
    return this.raw(new TextEncoder().encode(s));
  }
  /** The bytes so far. */
  build(): Uint8Array {
    return new Uint8Array(this.#parts);
  }
}
