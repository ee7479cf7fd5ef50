/**
 * The outgoing side of one agent connection: frames queued for the transport, coalesced into
 * large writes by one flush loop, with backpressure (writers wait above {@linkcode
 * OUT_HIGH_WATER}) and a hard cap that breaks a connection whose peer stopped reading.
 *
 * @module
 */

import { type FrameType, HEADER_LEN } from "./constants.ts";
import { ConnectionError } from "./errors.ts";
import { writeHeader } from "./frame.ts";

/** Bytes queued for the transport above which writers wait. */
export const OUT_HIGH_WATER = 1024 * 1024;

/** Bytes queued for the transport above which the connection is dropped (peer not reading). */
const OUT_HARD_LIMIT = 16 * 1024 * 1024;

/** Queued pieces (headers and payloads) above which writers wait. */
const OUT_HIGH_PIECES = 8192;

/** Queued pieces above which the connection is dropped (tiny frames cost more than their bytes). */
const OUT_HARD_PIECES = 65536;

/** Largest single write the output loop builds by coalescing queued frames. */
const COALESCE_LIMIT = 1024 * 1024;

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Options of {@linkcode OutQueue}. */
export interface OutQueueOptions {
  /** Called once when writing to the transport fails (the connection must end). */
  onWriteError: (error: ConnectionError) => void;
}

/** Frames waiting for the transport, and the loop that writes them. */
export class OutQueue {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #onWriteError: (error: ConnectionError) => void;
  #out: Uint8Array[] = [];
  #bytes = 0;
  #pieces = 0;
  #flushing = false;
  #batch: Uint8Array | undefined;
  #drainWaiters: Waiter[] = [];
  #ended = false;
  #sealed = false;
  #endError: ConnectionError | undefined;

  constructor(writer: WritableStreamDefaultWriter<Uint8Array>, options: OutQueueOptions) {
    this.#writer = writer;
    this.#onWriteError = options.onWriteError;
  }

  /** Bytes queued but not yet written. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Writers wait while this holds (bytes, or many tiny frames, waiting for the transport). */
  get full(): boolean {
    return this.#bytes > OUT_HIGH_WATER || this.#pieces > OUT_HIGH_PIECES;
  }

  /**
   * Queues one frame and starts the flush loop.
   *
   * @throws {ConnectionError} `closed` once ended; `limit` when the peer has not read for so
   * long that the queue passed its hard cap (the caller ends the connection).
   */
  push(type: FrameType, flags: number, channel: number, stream: number, payload: Uint8Array): void {
    // Sealed: the last frame is queued; what streams still send (credit, ...) is dropped.
    if (this.#sealed && !this.#ended) return;
    if (this.#ended) {
      throw this.#endError ?? new ConnectionError("closed", "Cannot send: connection is closed");
    }
    if (this.#bytes > OUT_HARD_LIMIT || this.#pieces > OUT_HARD_PIECES) {
      // Writers wait at OUT_HIGH_WATER; only replies we owe the peer (PING ACKs, RESETs for
      // refused OPENs) can pile up here, and only if the peer floods us while not reading.
      throw new ConnectionError(
        "limit",
        `Cannot send to peer: ${this.#pieces} frames (${this.#bytes} bytes) queued, ` +
          "the peer is not reading",
      );
    }
    const header = new Uint8Array(HEADER_LEN);
    writeHeader(header, 0, { type, flags, channel, stream, length: payload.length });
    this.#out.push(header);
    this.#bytes += HEADER_LEN;
    this.#pieces++;
    if (payload.length > 0) {
      this.#out.push(payload);
      this.#bytes += payload.length;
      this.#pieces++;
    }
    if (!this.#flushing) void this.#flush();
  }

  /** Resolves when the queue is at or below the high-water mark; rejects once ended. */
  drained(): Promise<void> {
    if (this.#ended) {
      return Promise.reject(
        this.#endError ?? new ConnectionError("closed", "Cannot send: connection is closed"),
      );
    }
    if (this.#bytes === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  /** Drops everything queued for one last frame (a GOAWAY: queued data belongs to failing streams). */
  replaceWithFrame(type: FrameType, payload: Uint8Array): void {
    const header = new Uint8Array(HEADER_LEN);
    writeHeader(header, 0, { type, flags: 0, channel: 0, stream: 0, length: payload.length });
    this.#out = [header, payload];
    this.#bytes = header.length + payload.length;
    this.#pieces = 2;
  }

  /** Everything pushed from now on is dropped silently (the frame queued last stays last). */
  seal(): void {
    this.#sealed = true;
  }

  /** Stops taking frames and fails every waiting writer with `error`. */
  end(error: ConnectionError | undefined, waiterError: ConnectionError): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endError = error;
    for (const w of this.#drainWaiters) w.reject(waiterError);
    this.#drainWaiters = [];
  }

  /** After {@linkcode end}: writes what is still queued (a GOAWAY last), then closes the writer. */
  async flushAndClose(): Promise<void> {
    // The running flush stops at `end`; `ready` waits for its write to settle.
    if (this.#flushing) await this.#writer.ready;
    while (this.#out.length > 0) await this.#writer.write(this.#takeBatch());
    this.#bytes = 0;
    this.#pieces = 0;
    await this.#writer.close();
  }

  /**
   * Takes the next write: queued frames copied into one reused batch buffer (a write completes
   * before the next batch is built, so reuse is safe); a piece larger than the batch goes alone.
   */
  #takeBatch(): Uint8Array {
    const first = this.#out[0]!;
    if (this.#out.length === 1 || first.length >= COALESCE_LIMIT) {
      this.#out.shift();
      this.#pieces--;
      return first;
    }
    this.#batch ??= new Uint8Array(COALESCE_LIMIT);
    const batch = this.#batch;
    let count = 0;
    let offset = 0;
    for (const piece of this.#out) {
      if (offset + piece.length > COALESCE_LIMIT) break;
      batch.set(piece, offset);
      offset += piece.length;
      count++;
    }
    this.#out.splice(0, count);
    this.#pieces -= count;
    return batch.subarray(0, offset);
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#out.length > 0 && !this.#ended) {
        const batch = this.#takeBatch();
        await this.#writer.write(batch);
        this.#bytes -= batch.length;
        if (!this.full) this.#wakeDrainers();
      }
    } catch (err) {
      this.#onWriteError(
        new ConnectionError("transport", `Cannot write to agent connection: ${err}`, {
          cause: err,
        }),
      );
    } finally {
      this.#flushing = false;
    }
  }

  #wakeDrainers(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w.resolve();
  }
}
