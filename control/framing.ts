/**
 * Newline-delimited framing without I/O: {@linkcode LineDecoder} takes bytes as they arrive and
 * yields complete lines; {@linkcode encodeLine} turns a message into one line of bytes.
 *
 * A line longer than the maximum is not buffered: the decoder reports it once, drops its bytes up
 * to the next newline and carries on, so one oversized message costs neither memory nor the
 * connection (the caller answers it with an error).
 *
 * @module
 */

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** What {@linkcode LineDecoder.push} yields: a complete line, or an oversized one that was dropped. */
export type DecodedLine =
  | { kind: "line"; text: string }
  | { kind: "too_long"; bytes: number };

/** Options of {@linkcode LineDecoder}. */
export interface LineDecoderOptions {
  /** Longest line kept, in bytes, newline excluded. */
  maxLineBytes: number;
}

/**
 * Splits a byte stream into UTF-8 lines ending in `\n` (a `\r` before it is dropped too).
 * Empty lines are skipped.
 *
 * @example Two lines in three pushes
 * ```ts
 * import { LineDecoder } from "./framing.ts";
 * const d = new LineDecoder({ maxLineBytes: 100 });
 * const enc = new TextEncoder();
 * const out = [
 *   ...d.push(enc.encode('{"a"')),
 *   ...d.push(enc.encode(':1}\n{}')),
 *   ...d.push(enc.encode("\n")),
 * ];
 * if (out.length !== 2) throw new Error("expected 2 lines");
 * ```
 */
export class LineDecoder {
  readonly #max: number;
  #parts: Uint8Array[] = [];
  #partBytes = 0;
  /** Bytes of the current line dropped because it is too long; -1 when not dropping. */
  #dropping = -1;
  readonly #utf8 = new TextDecoder();

  constructor(options: LineDecoderOptions) {
    if (!(options.maxLineBytes > 0)) {
      throw new RangeError(`Cannot create a line decoder: maxLineBytes is ${options.maxLineBytes}`);
    }
    this.#max = options.maxLineBytes;
  }

  /** Bytes buffered for the incomplete last line. */
  get bufferedBytes(): number {
    return this.#partBytes;
  }

  /** Feeds bytes; returns every line they complete (decoded before returning, so `bytes` may be reused). */
  push(bytes: Uint8Array): DecodedLine[] {
    const out: DecodedLine[] = [];
    let start = 0;
    while (start < bytes.length) {
      const nl = bytes.indexOf(NEWLINE, start);
      const end = nl === -1 ? bytes.length : nl;
      const piece = bytes.subarray(start, end);
      if (this.#dropping >= 0) {
        this.#dropping += piece.length;
      } else if (this.#partBytes + piece.length > this.#max) {
        this.#dropping = this.#partBytes + piece.length;
        this.#parts = [];
        this.#partBytes = 0;
      } else if (piece.length > 0) {
        // Copy: the caller may reuse its read buffer.
        this.#parts.push(nl === -1 ? piece.slice() : piece);
        this.#partBytes += piece.length;
      }
      if (nl === -1) break;
      start = nl + 1;
      if (this.#dropping >= 0) {
        out.push({ kind: "too_long", bytes: this.#dropping });
        this.#dropping = -1;
        continue;
      }
      const line = this.#take();
      if (line !== null) out.push({ kind: "line", text: line });
    }
    return out;
  }

  /** Ends the stream: returns the unterminated last line, if any (a peer may omit the final newline). */
  finish(): DecodedLine | null {
    if (this.#dropping >= 0) {
      const bytes = this.#dropping;
      this.#dropping = -1;
      return { kind: "too_long", bytes };
    }
    const line = this.#take();
    return line === null ? null : { kind: "line", text: line };
  }

  #take(): string | null {
    let joined: Uint8Array;
    if (this.#parts.length === 1) joined = this.#parts[0]!;
    else {
      joined = new Uint8Array(this.#partBytes);
      let o = 0;
      for (const p of this.#parts) {
        joined.set(p, o);
        o += p.length;
      }
    }
    this.#parts = [];
    this.#partBytes = 0;
    let len = joined.length;
    if (len > 0 && joined[len - 1] === CARRIAGE_RETURN) len--;
    if (len === 0) return null;
    return this.#utf8.decode(joined.subarray(0, len));
  }
}

const encoder = new TextEncoder();

/**
 * Serializes `message` as one line of UTF-8 JSON ending in `\n`. `JSON.stringify` escapes
 * newlines inside strings, so the framing cannot be broken by content.
 */
export function encodeLine(message: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(message) + "\n");
}
