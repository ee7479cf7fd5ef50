/**
 * A buffered reader over anything with a Deno-style `read`: exact-length reads as views of its
 * buffer (the NBD server's requests), reads straight into a caller's buffer for large payloads,
 * and "some bytes, give back what you did not use" reads (the HTTP relay's bodies). A stream that
 * ends part-way through an exact read is an error its owner chooses (`shortRead`), so each
 * protocol reports it in its own terms.
 *
 * @module
 */

import type { ByteSource } from "./bytes.ts";

/** Default size of the read buffer: large enough that small requests cost one syscall each. */
const DEFAULT_BUFFER = 256 * 1024;

/** Options of {@linkcode BufferedReader}. */
export interface BufferedReaderOptions {
  /** Size of the read buffer; the longest {@linkcode BufferedReader.view}. @default 262144 */
  bufferSize?: number;
  /** The error for a stream that ends inside an exact read (default: a plain `Error`). */
  shortRead?: (message: string) => Error;
}

/**
 * Buffered reader. {@linkcode BufferedReader.view} and {@linkcode BufferedReader.readSome}
 * return views into the internal buffer that are only valid until the next call;
 * {@linkcode BufferedReader.readInto} fills a caller's buffer, reading large payloads straight
 * into it (no intermediate copy).
 *
 * @example
 * ```ts
 * import { BufferedReader } from "./buffered_reader.ts";
 * const bytes = new Uint8Array([1, 2, 3, 4, 5]);
 * let served = false;
 * const r = new BufferedReader({
 *   read: (p) => {
 *     if (served) return Promise.resolve(null);
 *     served = true;
 *     p.set(bytes);
 *     return Promise.resolve(bytes.length);
 *   },
 * });
 * const head = await r.viewExact(2, "header");
 * if (head.join() !== "1,2") throw new Error(head.join());
 * ```
 */
export class BufferedReader {
  readonly #src: ByteSource;
  #buf: Uint8Array;
  readonly #shortRead: (message: string) => Error;
  #start = 0;
  #end = 0;
  #eof = false;

  constructor(src: ByteSource, options: BufferedReaderOptions = {}) {
    this.#src = src;
    this.#buf = new Uint8Array(options.bufferSize ?? DEFAULT_BUFFER);
    this.#shortRead = options.shortRead ?? ((message) => new Error(message));
  }

  /** Bytes already buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** The buffered bytes not yet consumed, as a view valid until the next call. */
  peek(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /** Consumes `n` of the bytes {@linkcode peek} shows. */
  consume(n: number): void {
    if (n < 0 || n > this.#end - this.#start) {
      throw new RangeError(`Cannot consume ${n} bytes: ${this.#end - this.#start} are buffered`);
    }
    this.#start += n;
  }

  /**
   * Reads more bytes into the buffer (making room first); false at the end of the stream or
   * when the buffer is full of unconsumed bytes.
   */
  async fill(): Promise<boolean> {
    if (this.#eof) return false;
    if (this.#start === this.#end) {
      this.#start = 0;
      this.#end = 0;
    } else if (this.#end === this.#buf.length) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buf.length) return false;
    const n = await this.#src.read(this.#buf.subarray(this.#end));
    if (n === null || n === 0) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  /**
   * Returns the next `n` bytes (n ≤ buffer size) as a view valid until the next call, or `null`
   * if the stream ended cleanly before the first byte. Ending part-way is a short read.
   */
  async view(n: number, what: string): Promise<Uint8Array | null> {
    if (n > this.#buf.length) throw new RangeError(`Cannot read ${what}: ${n} bytes exceed buffer`);
    while (this.#end - this.#start < n) {
      if (this.#end - this.#start + (this.#buf.length - this.#end) < n) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const had = this.#end - this.#start;
      if (!(await this.fill())) {
        if (had === 0) return null;
        throw this.#shortRead(`Cannot read ${what}: stream ended after ${had} of ${n} bytes`);
      }
    }
    const v = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return v;
  }

  /** Like {@linkcode BufferedReader.view} but the end of the stream is always a short read. */
  async viewExact(n: number, what: string): Promise<Uint8Array> {
    const v = await this.view(n, what);
    if (v === null) throw this.#shortRead(`Cannot read ${what}: stream ended`);
    return v;
  }

  /** Fills all of `target`; a short read if the stream ends first. */
  async readInto(target: Uint8Array, what: string): Promise<void> {
    let done = Math.min(this.#end - this.#start, target.length);
    target.set(this.#buf.subarray(this.#start, this.#start + done));
    this.#start += done;
    while (done < target.length) {
      const want = target.length - done;
      if (want >= this.#buf.length / 2) {
        // Large payload: read straight into the caller's buffer, skipping our buffer.
        const n = await this.#src.read(target.subarray(done));
        if (n === null || n === 0) {
          this.#eof = true;
          throw this.#shortRead(
            `Cannot read ${what}: stream ended after ${done} of ${target.length} bytes`,
          );
        }
        done += n;
      } else {
        if (!(await this.fill())) {
          throw this.#shortRead(
            `Cannot read ${what}: stream ended after ${done} of ${target.length} bytes`,
          );
        }
        const n = Math.min(this.#end - this.#start, want);
        target.set(this.#buf.subarray(this.#start, this.#start + n), done);
        this.#start += n;
        done += n;
      }
    }
  }

  /** Exactly `length` bytes into a new array; a short read if the stream ends first. */
  async readExact(length: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(out, what);
    return out;
  }

  /** Reads and discards `n` bytes (e.g. the payload of a rejected write). */
  async skip(n: number, what: string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#start === this.#end && !(await this.fill())) {
        throw this.#shortRead(
          `Cannot skip ${what}: stream ended with ${left} of ${n} bytes unread`,
        );
      }
      const k = Math.min(left, this.#end - this.#start);
      this.#start += k;
      left -= k;
    }
  }

  /**
   * Up to `max` bytes as a view of the buffer (valid until the next call), null at the end of
   * the stream.
   */
  async readSome(max: number): Promise<Uint8Array | null> {
    if (this.#start === this.#end && !await this.fill()) return null;
    const n = Math.min(max, this.#end - this.#start);
    const view = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return view;
  }

  /** Gives back the last `count` bytes of the latest {@linkcode readSome} view. */
  unread(count: number): void {
    this.#start -= count;
  }
}
