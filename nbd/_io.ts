/**
 * Byte-stream helpers shared by the handshake and transmission phases: a buffered reader that
 * hands out exact-length reads over anything with a Deno-style `read`, and `writeAll`.
 *
 * Internal module (leading underscore): not part of `nbd/mod.ts`.
 *
 * @module
 */

import { NbdProtocolError } from "./errors.ts";

/** Anything we can read bytes from (a `Deno.Conn`, or an in-memory pipe in tests). */
export interface ByteSource {
  /** Reads up to `p.length` bytes into `p`; `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything we can write bytes to. */
export interface ByteSink {
  /** Writes some prefix of `p`; returns how many bytes were written. */
  write(p: Uint8Array): Promise<number>;
}

/** Writes every byte of `data` (a sink may accept only part of it per call). */
export async function writeAll(sink: ByteSink, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    done += await sink.write(done === 0 ? data : data.subarray(done));
  }
}

/** Default size of the read buffer: large enough that small requests cost one syscall each. */
const DEFAULT_BUFFER = 256 * 1024;

/**
 * Buffered reader. {@linkcode BufferedReader.view} returns a view into the internal buffer
 * that is only valid until the next call; {@linkcode BufferedReader.readInto} fills a caller's
 * buffer, reading large payloads straight into it (no intermediate copy).
 */
export class BufferedReader {
  #src: ByteSource;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;

  /** Reads from `src` through a buffer of `bufferSize` bytes. */
  constructor(src: ByteSource, bufferSize = DEFAULT_BUFFER) {
    this.#src = src;
    this.#buf = new Uint8Array(bufferSize);
  }

  /** Bytes already buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    if (this.#start === this.#end) {
      this.#start = 0;
      this.#end = 0;
    } else if (this.#end === this.#buf.length) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
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
   * if the stream ended cleanly before the first byte. Ending part-way throws `SHORT_READ`.
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
      if (!(await this.#fill())) {
        if (had === 0) return null;
        throw new NbdProtocolError(
          "SHORT_READ",
          `Cannot read ${what}: stream ended after ${had} of ${n} bytes`,
        );
      }
    }
    const v = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return v;
  }

  /** Like {@linkcode BufferedReader.view} but end of stream is always `SHORT_READ`. */
  async viewExact(n: number, what: string): Promise<Uint8Array> {
    const v = await this.view(n, what);
    if (v === null) {
      throw new NbdProtocolError("SHORT_READ", `Cannot read ${what}: stream ended`);
    }
    return v;
  }

  /** Fills all of `target`; throws `SHORT_READ` if the stream ends first. */
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
          throw new NbdProtocolError(
            "SHORT_READ",
            `Cannot read ${what}: stream ended after ${done} of ${target.length} bytes`,
          );
        }
        done += n;
      } else {
        if (!(await this.#fill())) {
          throw new NbdProtocolError(
            "SHORT_READ",
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

  /** Reads and discards `n` bytes (e.g. the payload of a rejected write). */
  async skip(n: number, what: string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#start === this.#end && !(await this.#fill())) {
        throw new NbdProtocolError(
          "SHORT_READ",
          `Cannot skip ${what}: stream ended with ${left} of ${n} bytes unread`,
        );
      }
      const k = Math.min(left, this.#end - this.#start);
      this.#start += k;
      left -= k;
    }
  }
}
