/**
 * Newline-delimited framing without I/O, the one framer of both protocols that carry JSON lines
 * (the control protocol, and the agent protocol's listings and watch events):
 * {@linkcode LineDecoder} takes bytes as they arrive and yields complete lines;
 * {@linkcode encodeLine} turns a message into one line of bytes.
 *
 * A line longer than the maximum is never buffered. What happens next is the caller's policy
 * ({@linkcode LineOverflow}): `"skip"` reports it once, drops its bytes up to the next newline
 * and carries on, so one oversized message costs neither memory nor the connection (the control
 * server answers it with an error); `"fail"` throws {@linkcode LineTooLongError} and the stream
 * is done (a hostile guest gets no second chance).
 *
 * @module
 */

/** What {@linkcode LineDecoder.push} yields: a complete line, or an oversized one that was dropped. */
export type DecodedLine =
  | { kind: "line"; text: string }
  | { kind: "too_long"; bytes: number };

/** What a {@linkcode LineDecoder} does with a line over the maximum. */
export type LineOverflow = "skip" | "fail";

/** Options of {@linkcode LineDecoder}. */
export interface LineDecoderOptions {
  /**
   * Longest line kept, newline excluded. Counted in UTF-16 code units after decoding: equal to
   * bytes for ASCII (all of JSON's structure and base64), fewer for other text.
   */
  maxLineBytes: number;
  /** Skip an oversized line (reporting it) or fail the stream. @default "skip" */
  overflow?: LineOverflow;
  /** Invalid UTF-8 throws a `TypeError` instead of decoding to U+FFFD. @default false */
  fatal?: boolean;
}

/** A line was longer than the maximum and the policy is `"fail"`. */
export class LineTooLongError extends RangeError {
  /** The length seen so far (at least the maximum plus one). */
  readonly bytes: number;
  constructor(bytes: number, max: number) {
    super(`Cannot read a line: longer than ${max} bytes`);
    this.name = "LineTooLongError";
    this.bytes = bytes;
  }
}

/**
 * Splits a byte stream into UTF-8 lines ending in `\n` (a `\r` before it is dropped too).
 * Empty lines are skipped. Bytes are decoded as they arrive (a streaming decoder keeps characters
 * split between reads) and searched as text, which is several times faster than scanning bytes.
 *
 * @example Two lines in three pushes
 * ```ts
 * import { LineDecoder } from "./lines.ts";
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
  readonly #fail: boolean;
  #parts: string[] = [];
  #partLength = 0;
  /** Length of the current line dropped because it is too long; -1 when not dropping. */
  #dropping = -1;
  readonly #utf8: TextDecoder;

  constructor(options: LineDecoderOptions) {
    if (!(options.maxLineBytes > 0)) {
      throw new RangeError(`Cannot create a line decoder: maxLineBytes is ${options.maxLineBytes}`);
    }
    this.#max = options.maxLineBytes;
    this.#fail = options.overflow === "fail";
    this.#utf8 = new TextDecoder("utf-8", { fatal: options.fatal ?? false });
  }

  /** Length buffered for the incomplete last line. */
  get bufferedBytes(): number {
    return this.#partLength;
  }

  /** Feeds bytes; returns every line they complete (`bytes` may be reused afterwards). */
  push(bytes: Uint8Array): DecodedLine[] {
    return this.#scan(this.#utf8.decode(bytes, { stream: true }));
  }

  #scan(text: string): DecodedLine[] {
    const out: DecodedLine[] = [];
    let start = 0;
    while (start < text.length) {
      const nl = text.indexOf("\n", start);
      const end = nl === -1 ? text.length : nl;
      const pieceLength = end - start;
      if (this.#dropping >= 0) {
        this.#dropping += pieceLength;
      } else if (this.#partLength + pieceLength > this.#max) {
        if (this.#fail) throw new LineTooLongError(this.#partLength + pieceLength, this.#max);
        this.#dropping = this.#partLength + pieceLength;
        this.#parts = [];
        this.#partLength = 0;
      } else if (pieceLength > 0) {
        this.#parts.push(start === 0 && end === text.length ? text : text.slice(start, end));
        this.#partLength += pieceLength;
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
    const rest = this.#scan(this.#utf8.decode());
    if (rest.length > 0) return rest[0]!;
    if (this.#dropping >= 0) {
      const bytes = this.#dropping;
      this.#dropping = -1;
      return { kind: "too_long", bytes };
    }
    const line = this.#take();
    return line === null ? null : { kind: "line", text: line };
  }

  #take(): string | null {
    let line = this.#parts.length === 1 ? this.#parts[0]! : this.#parts.join("");
    this.#parts = [];
    this.#partLength = 0;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    return line.length === 0 ? null : line;
  }
}

const encoder = new TextEncoder();
/** Marks where binary fields go in the JSON text; cannot occur in JSON.stringify output. */
const BLOB_MARK = "\u0000blob:";
const BLOB_MARK_JSON = JSON.stringify(BLOB_MARK).slice(1, -1);

/**
 * Serializes `message` as one line of UTF-8 JSON ending in `\n`. `JSON.stringify` escapes
 * newlines inside strings, so content cannot break the framing.
 *
 * `Uint8Array` values anywhere in the message are written as base64 strings, spliced into the
 * output bytes directly: stringifying and re-encoding a multi-megabyte base64 string costs
 * several times more than the base64 itself, and file chunks and process output are most of the
 * bytes this protocol moves.
 *
 * @example
 * ```ts
 * import { encodeLine } from "./lines.ts";
 * const line = new TextDecoder().decode(encodeLine({ data: new Uint8Array([104, 105]) }));
 * if (line !== '{"data":"aGk="}\n') throw new Error(line);
 * ```
 */
export function encodeLine(message: unknown): Uint8Array {
  const blobs: Uint8Array[] = [];
  const text = JSON.stringify(
    message,
    (_key, value) => value instanceof Uint8Array ? BLOB_MARK + (blobs.push(value) - 1) : value,
  );
  if (blobs.length === 0) return encoder.encode(text + "\n");
  // Split the JSON text at the marks: text, blob, text, blob, ..., text.
  const texts: Uint8Array[] = [];
  const b64: string[] = [];
  let from = 0;
  let size = 1; // newline
  for (let i = 0; i < blobs.length; i++) {
    const mark = BLOB_MARK_JSON + i;
    const at = text.indexOf(mark, from);
    const piece = encoder.encode(text.slice(from, at));
    texts.push(piece);
    const encoded = blobs[i]!.toBase64();
    b64.push(encoded);
    size += piece.length + encoded.length;
    from = at + mark.length;
  }
  const tail = encoder.encode(text.slice(from) + "\n");
  texts.push(tail);
  size += tail.length - 1;
  const out = new Uint8Array(size);
  let o = 0;
  for (let i = 0; i < b64.length; i++) {
    out.set(texts[i]!, o);
    o += texts[i]!.length;
    // Base64 is ASCII: one byte per character.
    o += encoder.encodeInto(b64[i]!, out.subarray(o)).written;
  }
  out.set(tail, o);
  return out;
}
