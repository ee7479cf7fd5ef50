/**
 * Streaming multi-needle byte replacement: the core of secret injection (placeholder → value)
 * and scrubbing (value → placeholder) in bodies whose bytes arrive in arbitrary pieces.
 *
 * Semantics, identical for a whole buffer and for any split of it into pushed chunks:
 * scanning left to right, at each position the longest needle that matches there is replaced
 * and scanning resumes after it; otherwise the byte is kept. Matches never overlap and the
 * replacement is never rescanned. Among equal needles the first pair given wins.
 *
 * The carry (bytes held back because they may start a needle that the next chunk completes)
 * is at most `maxNeedleLength - 1` bytes, and only exists while the tail of the input is a
 * proper prefix of some needle, so memory is bounded by the longest needle.
 *
 * @module
 */

/** One replacement: every `from` sequence becomes `to`. */
export interface ReplacePair {
  /** The needle; must not be empty. */
  from: Uint8Array;
  /** What the needle becomes. */
  to: Uint8Array;
  /** Called at each match (the relay notices a withheld placeholder with it). */
  onMatch?: () => void;
}

const EMPTY = new Uint8Array(0);

/** The needles compiled once (grouping and skip tables); shared by every fork of a replacer. */
class NeedleSet {
  /** Pairs grouped by the needle's first byte, longest needle first. */
  readonly byFirstByte = new Map<number, ReplacePair[]>();
  readonly maxLength: number;
  readonly minLength: number;
  /**
   * Horspool shift per bigram `(b[i-1] << 8) | b[i]` ending a window of `minLength` bytes
   * (capped at 255; a smaller shift is always safe). 0: some needle's window ends in it, verify.
   * Bigrams rather than bytes: on text, most single bytes occur somewhere in a needle, so byte
   * shifts stay short; bigrams rarely do. Used when `minLength >= 2`.
   */
  readonly bigramShift = new Uint8Array(65536);
  /** Single-byte Horspool shift, for 1-byte needles. */
  readonly byteShift = new Int32Array(256);
  /** 1 for bytes some needle has at index minLength - 1 (single-byte mode: verify there). */
  readonly endsWindow = new Uint8Array(256);

  constructor(pairs: readonly ReplacePair[]) {
    let max = 0;
    for (const pair of pairs) {
      const first = pair.from[0];
      if (first === undefined) {
        throw new RangeError("Cannot replace an empty needle: give at least one byte");
      }
      let group = this.byFirstByte.get(first);
      if (group === undefined) this.byFirstByte.set(first, group = []);
      if (!group.some((p) => bytesEqual(p.from, pair.from))) group.push(pair);
      max = Math.max(max, pair.from.length);
    }
    // Stable sort: among equal lengths the pair given first is tried first.
    for (const group of this.byFirstByte.values()) {
      group.sort((a, b) => b.from.length - a.from.length);
    }
    this.maxLength = max;
    const min = pairs.length === 0 ? 0 : Math.min(...pairs.map((p) => p.from.length));
    this.minLength = min;
    this.byteShift.fill(Math.max(min, 1));
    this.bigramShift.fill(Math.min(Math.max(min - 1, 1), 255));
    for (const { from } of pairs) {
      for (let j = 0; j < min - 1; j++) {
        this.byteShift[from[j]!] = Math.min(this.byteShift[from[j]!]!, min - 1 - j);
        // The bigram (from[j], from[j+1]) ending the window means the needle starts
        // min - 2 - j bytes further on.
        const bigram = (from[j]! << 8) | from[j + 1]!;
        this.bigramShift[bigram] = Math.min(this.bigramShift[bigram]!, min - 2 - j);
      }
      if (min > 0) this.endsWindow[from[min - 1]!] = 1;
    }
  }
}

/** Compiled needle sets by the (readonly) pairs array they came from. */
const compiled = new WeakMap<readonly ReplacePair[], NeedleSet>();

/**
 * Replaces needles in a byte stream pushed in pieces (see the module doc for the rules).
 *
 * @example Needle split across two chunks
 * ```ts
 * import { assertEquals } from "../../tests/assert.ts";
 * const enc = new TextEncoder();
 * const dec = new TextDecoder();
 * const r = new StreamReplacer([{ from: enc.encode("PH"), to: enc.encode("value") }]);
 * assertEquals(dec.decode(r.push(enc.encode("a P"))), "a ");
 * assertEquals(dec.decode(r.push(enc.encode("H b"))), "value b");
 * assertEquals(r.flush().length, 0);
 * ```
 */
export class StreamReplacer {
  readonly #needles: NeedleSet;
  #carry: Uint8Array = EMPTY;

  /**
   * Builds a replacer.
   *
   * @param pairs The replacements; an empty list makes a pass-through replacer. The skip tables
   * are built once per array: a relay making one replacer per message passes the same array.
   * @throws {RangeError} If a needle is empty.
   */
  constructor(pairs: readonly ReplacePair[]) {
    let needles = compiled.get(pairs);
    if (needles === undefined) compiled.set(pairs, needles = new NeedleSet(pairs));
    this.#needles = needles;
  }

  /** True when there is nothing to replace (every push returns its input). */
  get isIdentity(): boolean {
    return this.#needles.maxLength === 0;
  }

  /** True when every replacement has the length of its needle (lengths never change). */
  static preservesLength(pairs: readonly ReplacePair[]): boolean {
    return pairs.every((p) => p.from.length === p.to.length);
  }

  /** Bytes currently held back (a possible needle start); never more than the longest needle - 1. */
  get carryLength(): number {
    return this.#carry.length;
  }

  /**
   * Feeds the next piece of the stream; returns the output that is final so far. The result
   * may be a view of `chunk` (no copy when nothing is replaced): consume it before reusing
   * `chunk`'s memory. The replacer itself never keeps a view of `chunk`.
   */
  push(chunk: Uint8Array): Uint8Array {
    if (this.#needles.maxLength === 0) return chunk;
    const input = this.#carry.length === 0 ? chunk : concatBytes([this.#carry, chunk]);
    const { output, carryStart } = this.#scan(input, false);
    this.#carry = carryStart === input.length ? EMPTY : input.slice(carryStart);
    return output;
  }

  /** Ends the stream: returns the held-back bytes (they cannot start a needle any more). */
  flush(): Uint8Array {
    const carry = this.#carry;
    this.#carry = EMPTY;
    if (carry.length === 0) return EMPTY;
    return this.#scan(carry, true).output;
  }

  /** Replaces in one complete buffer without touching the stream state. */
  replaceWhole(input: Uint8Array): Uint8Array {
    if (this.#needles.maxLength === 0) return input;
    return this.#scan(input, true).output;
  }

  #scan(buf: Uint8Array, final: boolean): { output: Uint8Array; carryStart: number } {
    // Set Horspool over the first `minLength` bytes of every needle: look at the end of a
    // window, verify only where some needle's window ends like that, else skip ahead.
    const needles = this.#needles;
    const min = needles.minLength;
    const pieces: Uint8Array[] = [];
    let emitted = 0;
    let carryStart = buf.length;
    let replaced = false;
    let p = 0;
    let undecided = false;
    const last = buf.length - min;
    while (p <= last) {
      const end = p + min - 1;
      let verify: boolean;
      let skip: number;
      if (min >= 2) {
        skip = needles.bigramShift[(buf[end - 1]! << 8) | buf[end]!]!;
        verify = skip === 0;
        if (verify) skip = 1;
      } else {
        const c = buf[end]!;
        verify = needles.endsWindow[c] === 1;
        skip = needles.byteShift[c]!;
      }
      if (verify) {
        const outcome = this.#matchAt(buf, p, final);
        if (outcome === "undecided") {
          carryStart = p;
          undecided = true;
          break;
        }
        if (outcome !== null) {
          outcome.onMatch?.();
          if (p > emitted) pieces.push(buf.subarray(emitted, p));
          if (outcome.to.length > 0) pieces.push(outcome.to);
          replaced = true;
          p = emitted = p + outcome.from.length;
          continue;
        }
      }
      p += skip;
    }
    if (!undecided && !final) {
      // Windows past the end were never looked at: hold back the first start of a needle.
      for (let q = Math.max(p, buf.length - min + 1, emitted); q < buf.length; q++) {
        if (this.#isNeedlePrefix(buf, q)) {
          carryStart = q;
          break;
        }
      }
    }
    if (!replaced) return { output: buf.subarray(0, carryStart), carryStart };
    if (carryStart > emitted) pieces.push(buf.subarray(emitted, carryStart));
    return { output: concatBytes(pieces), carryStart };
  }

  /** True when `buf[at..]` (shorter than every needle) is the start of some needle. */
  #isNeedlePrefix(buf: Uint8Array, at: number): boolean {
    const group = this.#needles.byFirstByte.get(buf[at]!);
    if (group === undefined) return false;
    const available = buf.length - at;
    return group.some((pair) => startsWithAt(buf, at, pair.from, available));
  }

  /** The longest pair matching at `at`, null if none can, "undecided" if more input may tell. */
  #matchAt(buf: Uint8Array, at: number, final: boolean): ReplacePair | null | "undecided" {
    const group = this.#needles.byFirstByte.get(buf[at]!);
    if (group === undefined) return null;
    const available = buf.length - at;
    for (const pair of group) {
      const needle = pair.from;
      if (needle.length > available) {
        if (!final && startsWithAt(buf, at, needle, available)) return "undecided";
        continue;
      }
      if (startsWithAt(buf, at, needle, needle.length)) return pair;
    }
    return null;
  }
}

/** True when `buf[at..at+count)` equals `needle[0..count)`. */
function startsWithAt(buf: Uint8Array, at: number, needle: Uint8Array, count: number): boolean {
  for (let j = 1; j < count; j++) {
    if (buf[at + j] !== needle[j]) return false;
  }
  return true;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && startsWithAt(a, 0, b, b.length) && a[0] === b[0];
}

/** Concatenates byte arrays into a new one. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
