/**
 * Transmission-phase replies: simple replies, structured reply chunks, `base:allocation`
 * descriptors, and {@linkcode ReplyWriter}, which serializes replies onto the socket.
 *
 * @module
 */

import type { Extent } from "./backend.ts";
import { type ByteSink, writeAll } from "./_io.ts";
import { AllocationState, Limit, Magic, ReplyFlag, ReplyType, Size } from "./wire.ts";

const encoder = new TextEncoder();

/** Encodes a simple reply header. */
export function encodeSimpleReply(cookie: Uint8Array, error: number): Uint8Array {
  const b = new Uint8Array(Size.SIMPLE_REPLY_HEADER);
  const v = new DataView(b.buffer);
  v.setUint32(0, Magic.SIMPLE_REPLY);
  v.setUint32(4, error);
  b.set(cookie, 8);
  return b;
}

/** Encodes a structured reply chunk header, leaving `extra` bytes of room after it. */
export function encodeStructuredHeader(
  cookie: Uint8Array,
  chunk: { flags: number; type: number; length: number },
  extra = 0,
): Uint8Array {
  const b = new Uint8Array(Size.STRUCTURED_REPLY_HEADER + extra);
  const v = new DataView(b.buffer);
  v.setUint32(0, Magic.STRUCTURED_REPLY);
  v.setUint16(4, chunk.flags);
  v.setUint16(6, chunk.type);
  b.set(cookie, 8);
  v.setUint32(16, chunk.length);
  return b;
}

/** Encodes an NBD_REPLY_TYPE_ERROR chunk (with DONE) carrying `message`. */
export function encodeStructuredError(
  cookie: Uint8Array,
  error: number,
  message: string,
): Uint8Array {
  let msg = encoder.encode(message);
  if (msg.length > Limit.MAX_STRING) msg = msg.subarray(0, Limit.MAX_STRING);
  const b = encodeStructuredHeader(cookie, {
    flags: ReplyFlag.DONE,
    type: ReplyType.ERROR,
    length: 6 + msg.length,
  }, 6 + msg.length);
  const v = new DataView(b.buffer);
  v.setUint32(Size.STRUCTURED_REPLY_HEADER, error);
  v.setUint16(Size.STRUCTURED_REPLY_HEADER + 4, msg.length);
  b.set(msg, Size.STRUCTURED_REPLY_HEADER + 6);
  return b;
}

/** Folds backend extents into at most `max` (length, flags) descriptors covering ≤ `length`. */
export function extentsToDescriptors(
  extents: readonly Extent[],
  length: number,
  max: number,
): [number, number][] {
  const out: [number, number][] = [];
  let pos = 0;
  for (const e of extents) {
    if (!(e.length > 0) || !Number.isSafeInteger(e.length)) break;
    const len = Math.min(e.length, length - pos);
    if (len <= 0) break;
    const flags = (e.hole ? AllocationState.HOLE : 0) | (e.zero ? AllocationState.ZERO : 0);
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === flags) {
      last[0] += len;
    } else {
      if (out.length === max) break;
      out.push([len, flags]);
    }
    pos += len;
  }
  // A backend that describes nothing gets the always-safe answer: status 0 for the whole range.
  if (out.length === 0) out.push([length, 0]);
  return out;
}

/** Largest payload coalesced into a neighbour write; larger ones are written on their own. */
const COALESCE_LIMIT = 64 * 1024;
const COALESCE_BUFFER = 256 * 1024;

/**
 * Serializes replies onto the socket. Small messages queued together are copied into one
 * buffer and written with one syscall; large payloads are written as they are.
 */
export class ReplyWriter {
  #sink: ByteSink;
  #queue: { parts: Uint8Array[]; done: (err?: unknown) => void }[] = [];
  #busy = false;
  #failed: unknown = null;
  #scratch = new Uint8Array(COALESCE_BUFFER);

  /** Writes to `sink`. */
  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  /** `true` once a write failed; later sends fail at once. */
  get failed(): boolean {
    return this.#failed !== null;
  }

  /** Queues `parts` as one reply; `done` runs once written (or with the write error). */
  send(parts: Uint8Array[], done: (err?: unknown) => void): void {
    if (this.#failed !== null) {
      done(this.#failed);
      return;
    }
    this.#queue.push({ parts, done });
    if (!this.#busy) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#busy = true;
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        let fill = 0;
        for (const entry of batch) {
          for (const p of entry.parts) {
            if (p.length > COALESCE_LIMIT || fill + p.length > this.#scratch.length) {
              if (fill > 0) {
                await writeAll(this.#sink, this.#scratch.subarray(0, fill));
                fill = 0;
              }
              if (p.length > COALESCE_LIMIT) {
                await writeAll(this.#sink, p);
                continue;
              }
            }
            this.#scratch.set(p, fill);
            fill += p.length;
          }
        }
        if (fill > 0) await writeAll(this.#sink, this.#scratch.subarray(0, fill));
        for (const entry of batch) entry.done();
      } catch (err) {
        this.#failed = err;
        for (const entry of batch) entry.done(err);
        for (const entry of this.#queue) entry.done(err);
        this.#queue = [];
      }
    }
    this.#busy = false;
  }
}
