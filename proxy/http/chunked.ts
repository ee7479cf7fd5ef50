/**
 * The chunked transfer coding (RFC 9112 §7.1) without I/O: an incremental decoder fed any
 * split of the wire bytes, and the encoder helpers the relay re-chunks its output with.
 *
 * The decoder keeps at most one chunk-size line or trailer line ({@linkcode MAX_CHUNK_LINE_BYTES},
 * trailers capped like a head) and hands out body data as views of the input, so memory stays
 * bounded whatever the peer sends. Chunk extensions are validated loosely and dropped (we
 * re-chunk). Chunk sizes above 2^52 are refused.
 *
 * @module
 */

import {
  MAX_CHUNK_LINE_BYTES,
  MAX_CHUNK_SIZE_DIGITS,
  MAX_HEAD_BYTES,
  MAX_HEADER_COUNT,
} from "./constants.ts";
import { byteStringToBytes, type HeaderField, parseFieldLines } from "./head.ts";
import { HttpRelayError } from "./error.ts";

const CR = 0x0d;
const LF = 0x0a;

type DecoderState = "size" | "data" | "data-crlf" | "trailers" | "done";

/** What one {@linkcode ChunkedDecoder.push} produced. */
export interface ChunkedDecodeResult {
  /** How many input bytes were consumed; less than the input only once the body is done. */
  consumed: number;
  /** Body data, as views of the input (consume before reusing the input's memory). */
  data: Uint8Array[];
}

function malformed(what: string): HttpRelayError {
  return new HttpRelayError("malformed-chunk", `Cannot decode chunked body: ${what}`);
}

/**
 * Incremental decoder of a chunked body.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/_assert.ts";
 * const d = new ChunkedDecoder();
 * const r = d.push(new TextEncoder().encode("3\r\nabc\r\n0\r\n\r\nNEXT"));
 * assertEquals(r.data.map((x) => new TextDecoder().decode(x)), ["abc"]);
 * assertEquals([r.consumed, d.done], [13, true]);
 * ```
 */
export class ChunkedDecoder {
  #state: DecoderState = "size";
  #remaining = 0;
  /** The current line (size or trailer) as a byte string, without its CRLF. */
  #line = "";
  #sawCr = false;
  #trailerLines: string[] = [];
  #trailerBytes = 0;
  #trailers: HeaderField[] = [];

  /** True once the last chunk and the trailer section have been read. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** The trailer fields (valid once {@linkcode done}). */
  get trailers(): HeaderField[] {
    return this.#trailers;
  }

  /**
   * Feeds wire bytes.
   *
   * @throws {HttpRelayError} `malformed-chunk` for bad framing, `too-many-headers` for too many
   * trailers.
   */
  push(input: Uint8Array): ChunkedDecodeResult {
    const data: Uint8Array[] = [];
    let i = 0;
    while (i < input.length && this.#state !== "done") {
      switch (this.#state) {
        case "data": {
          const take = Math.min(this.#remaining, input.length - i);
          data.push(input.subarray(i, i + take));
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = "data-crlf";
          break;
        }
        case "data-crlf":
        case "size":
        case "trailers": {
          const end = this.#takeLine(input, i);
          if (end === -1) return { consumed: input.length, data };
          i = end;
          this.#lineDone();
          break;
        }
      }
    }
    return { consumed: i, data };
  }

  /** Appends line bytes from `input[i..]`; returns the index after the CRLF, or -1 if not yet. */
  #takeLine(input: Uint8Array, start: number): number {
    const limit = this.#state === "trailers" ? MAX_HEAD_BYTES : MAX_CHUNK_LINE_BYTES;
    for (let i = start; i < input.length; i++) {
      const c = input[i]!;
      if (this.#sawCr) {
        if (c !== LF) throw malformed("a CR is not followed by LF");
        this.#sawCr = false;
        return i + 1;
      }
      if (c === CR) {
        this.#sawCr = true;
        continue;
      }
      if (c === LF) throw malformed("a line ends in a bare LF");
      if (this.#line.length >= limit || this.#trailerBytes + this.#line.length >= MAX_HEAD_BYTES) {
        throw malformed("a chunk-size or trailer line is too long");
      }
      this.#line += String.fromCharCode(c);
    }
    return -1;
  }

  #lineDone(): void {
    const line = this.#line;
    this.#line = "";
    switch (this.#state) {
      case "data-crlf":
        if (line.length !== 0) throw malformed("chunk data is longer than its size");
        this.#state = "size";
        return;
      case "size": {
        const match = /^([0-9A-Fa-f]+)[ \t]*(;.*)?$/.exec(line);
        if (match === null) throw malformed("a chunk size is not hexadecimal");
        const digits = match[1]!.replace(/^0+(?=.)/, "");
        if (digits.length > MAX_CHUNK_SIZE_DIGITS) throw malformed("a chunk size is too large");
        const size = parseInt(digits, 16);
        if (size === 0) {
          this.#state = "trailers";
        } else {
          this.#remaining = size;
          this.#state = "data";
        }
        return;
      }
      case "trailers":
        if (line.length === 0) {
          this.#trailers = parseFieldLines(this.#trailerLines);
          this.#state = "done";
          return;
        }
        this.#trailerBytes += line.length + 2;
        this.#trailerLines.push(line);
        if (this.#trailerLines.length > MAX_HEADER_COUNT) {
          throw new HttpRelayError(
            "too-many-headers",
            `Cannot decode chunked body: more than ${MAX_HEADER_COUNT} trailers`,
          );
        }
        return;
    }
  }
}

/**
 * One chunk on the wire: size line, data, CRLF, in one buffer so it takes one write. Built in
 * `scratch` when it fits (the result is then a view of it, valid until `scratch` is reused),
 * else in a new array. Empty data gives an empty result (a zero size would end the body).
 */
export function encodeChunk(data: Uint8Array, scratch?: Uint8Array): Uint8Array {
  if (data.length === 0) return new Uint8Array(0);
  const size = data.length.toString(16);
  const total = size.length + 2 + data.length + 2;
  const out = scratch !== undefined && scratch.length >= total
    ? scratch.subarray(0, total)
    : new Uint8Array(total);
  for (let i = 0; i < size.length; i++) out[i] = size.charCodeAt(i);
  out[size.length] = CR;
  out[size.length + 1] = LF;
  out.set(data, size.length + 2);
  out[total - 2] = CR;
  out[total - 1] = LF;
  return out;
}

/** The last chunk plus the trailer section (`0\r\n`, trailer fields, `\r\n`). */
export function encodeLastChunk(trailers: readonly HeaderField[] = []): Uint8Array {
  let text = "0\r\n";
  for (const [name, value] of trailers) text += `${name}: ${value}\r\n`;
  return byteStringToBytes(text + "\r\n");
}
