/**
 * A bounded per-process output buffer: chunks numbered by `seq` (1, 2, 3... per process), the
 * oldest dropped once the total passes the byte budget. `attach {pid, since_seq}` replays from it.
 *
 * @module
 */

/** One output chunk. */
export interface OutputChunk {
  /** Sequence number, 1-based, per process. */
  seq: number;
  /** Which stream it came from. */
  stream: "stdout" | "stderr";
  /** The bytes. */
  data: Uint8Array;
}

/** What {@linkcode OutputRing.since} returns. */
export interface RingReplay {
  /** Chunks with seq > since, oldest first. */
  chunks: OutputChunk[];
  /** True when chunks after `since` were already dropped (the replay has a gap at the start). */
  truncated: boolean;
  /** The seq the next chunk will get. */
  nextSeq: number;
}

/**
 * Keeps the newest output chunks within `maxBytes`. A single chunk bigger than the budget is kept
 * alone (the budget is soft by at most one chunk, which the agent caps).
 *
 * @example
 * ```ts
 * import { OutputRing } from "./ring.ts";
 * const r = new OutputRing(4);
 * r.push("stdout", new Uint8Array(3));
 * r.push("stdout", new Uint8Array(3));
 * const replay = r.since(0);
 * if (replay.chunks.length !== 1 || !replay.truncated) throw new Error("oldest chunk dropped");
 * ```
 */
export class OutputRing {
  readonly #maxBytes: number;
  #chunks: OutputChunk[] = [];
  #head = 0;
  #bytes = 0;
  #nextSeq = 1;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The seq the next chunk gets. */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** Appends a chunk and returns it with its seq. */
  push(stream: "stdout" | "stderr", data: Uint8Array): OutputChunk {
    const chunk = { seq: this.#nextSeq++, stream, data };
    this.#chunks.push(chunk);
    this.#bytes += data.length;
    while (this.#bytes > this.#maxBytes && this.#chunks.length - this.#head > 1) {
      this.#bytes -= this.#chunks[this.#head]!.data.length;
      this.#chunks[this.#head] = undefined as unknown as OutputChunk;
      this.#head++;
    }
    // Compact now and then so the array does not grow without bound.
    if (this.#head > 1024 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
    return chunk;
  }

  /** Chunks with seq greater than `since`. */
  since(since: number): RingReplay {
    const live = this.#chunks.slice(this.#head);
    const oldest = live[0]?.seq ?? this.#nextSeq;
    return {
      chunks: live.filter((c) => c.seq > since),
      truncated: since + 1 < oldest,
      nextSeq: this.#nextSeq,
    };
  }
}
