/**
 * A transport: one byte stream pair carrying newline-delimited JSON messages. It only frames,
 * queues and closes; ids, handlers and timeouts belong to the server session and the client.
 *
 * Writes are queued in order and counted; producers that must not outrun a slow peer await
 * {@linkcode LineConnection.ready}, which holds while more than `maxQueuedBytes` wait.
 *
 * @module
 */

import { type DecodedLine, encodeLine, LineDecoder } from "../io/mod.ts";

/** Options of {@linkcode LineConnection}. */
export interface LineConnectionOptions {
  /** Longest incoming line. */
  maxLineBytes: number;
  /** Queued outgoing bytes above which {@linkcode LineConnection.ready} waits. */
  maxQueuedBytes: number;
}

/** Newline-delimited JSON over a readable and a writable byte stream. */
export class LineConnection {
  readonly #readable: ReadableStream<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #decoder: LineDecoder;
  readonly #maxQueued: number;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false;
  #closed = false;
  #waiters: Array<() => void> = [];
  #flushWaiters: Array<() => void> = [];
  readonly #closedPromise: Promise<void>;
  #resolveClosed!: () => void;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;

  constructor(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
    options: LineConnectionOptions,
  ) {
    this.#readable = readable;
    this.#writer = writable.getWriter();
    this.#decoder = new LineDecoder({ maxLineBytes: options.maxLineBytes });
    this.#maxQueued = options.maxQueuedBytes;
    this.#closedPromise = new Promise((r) => (this.#resolveClosed = r));
  }

  /** True once closed (by either side). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Resolves when the connection is closed. */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Bytes waiting to be written. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Incoming lines until the peer closes its side (or the connection is closed). */
  async *lines(): AsyncGenerator<DecodedLine> {
    this.#reader = this.#readable.getReader();
    try {
      while (!this.#closed) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        for (const line of this.#decoder.push(value)) yield line;
      }
      const last = this.#decoder.finish();
      if (last && !this.#closed) yield last;
    } catch (err) {
      if (!this.#closed) throw err;
    } finally {
      this.#reader.releaseLock();
    }
  }

  /** Queues one message; returns false when the connection is closed. */
  send(message: unknown): boolean {
    if (this.#closed) return false;
    const bytes = encodeLine(message);
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
    if (!this.#writing) void this.#flush();
    return true;
  }

  /** Resolves when the outgoing queue is short enough to add more (or the connection closed). */
  ready(): Promise<void> {
    if (this.#closed || this.#queuedBytes <= this.#maxQueued) return Promise.resolve();
    return new Promise((r) => this.#waiters.push(r));
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        // Batch small messages into one write.
        let batch: Uint8Array;
        if (this.#queue.length === 1) batch = this.#queue.shift()!;
        else {
          let n = 0;
          let count = 0;
          for (const b of this.#queue) {
            if (count > 0 && n + b.length > 256 * 1024) break;
            n += b.length;
            count++;
          }
          batch = new Uint8Array(n);
          let o = 0;
          for (const b of this.#queue.splice(0, count)) {
            batch.set(b, o);
            o += b.length;
          }
        }
        await this.#writer.write(batch);
        this.#queuedBytes -= batch.length;
        if (this.#queuedBytes <= this.#maxQueued) this.#wake();
      }
    } catch {
      await this.close();
    } finally {
      this.#writing = false;
      if (this.#queue.length === 0) this.#wakeFlushed();
    }
  }

  #wakeFlushed(): void {
    const w = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const r of w) r();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const r of w) r();
  }

  /** Waits until everything queued has been written (or the connection closed). */
  flushed(): Promise<void> {
    if (this.#closed || (this.#queue.length === 0 && !this.#writing)) return Promise.resolve();
    return new Promise((r) => this.#flushWaiters.push(r));
  }

  /** Closes both directions; queued messages not yet written are dropped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#wake();
    this.#wakeFlushed();
    try {
      await this.#reader?.cancel();
    } catch { /* already closed */ }
    try {
      await this.#writer.close();
    } catch { /* already closed or errored */ }
    this.#resolveClosed();
  }
}
