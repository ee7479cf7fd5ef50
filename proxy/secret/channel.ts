/**
 * A bounded one-way byte channel between two async tasks in this process: what joins the
 * relay (which reads and writes a connection's guest side) to the code that serves that
 * connection in-process (the TLS terminator and the HTTP secret relay).
 *
 * @module
 */

/** Bytes a channel holds before its writer waits. */
const DEFAULT_CAPACITY = 256 * 1024;

/** One direction: `write` waits while the channel is full, `read` while it is empty. */
export class ByteChannel {
  readonly #capacity: number;
  readonly #chunks: Uint8Array[] = [];
  #head = 0;
  #bytes = 0;
  #ended = false;
  #error: Error | undefined;
  #readerWaiting: (() => void) | undefined;
  #writerWaiting: (() => void) | undefined;

  /** A channel that holds up to `capacity` bytes (default 256 KiB). */
  constructor(capacity = DEFAULT_CAPACITY) {
    this.#capacity = capacity;
  }

  /** Queues a copy of `p` (waiting for room first); rejects once the channel is aborted. */
  async write(p: Uint8Array): Promise<number> {
    while (this.#bytes >= this.#capacity && this.#error === undefined && !this.#ended) {
      await new Promise<void>((resolve) => this.#writerWaiting = resolve);
    }
    if (this.#error) throw this.#error;
    if (this.#ended) throw new Deno.errors.BrokenPipe("write after end");
    if (p.length === 0) return 0;
    this.#chunks.push(p.slice());
    this.#bytes += p.length;
    this.#wakeReader();
    return p.length;
  }

  /** Reads up to `p.length` bytes; null once the writer ended and everything was read. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#bytes === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#readerWaiting = resolve);
    }
    let n = 0;
    while (n < p.length && this.#bytes > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(p.length - n, chunk.length - this.#head);
      p.set(chunk.subarray(this.#head, this.#head + take), n);
      n += take;
      this.#head += take;
      this.#bytes -= take;
      if (this.#head === chunk.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
    }
    this.#wakeWriter();
    return n;
  }

  /** The writer is done: readers get the rest, then null. */
  end(): void {
    this.#ended = true;
    this.#wakeReader();
    this.#wakeWriter();
  }

  /** Fails both ends from now on (pending and later calls reject with `error`). */
  abort(error: Error = new Deno.errors.ConnectionReset("channel closed")): void {
    if (this.#error) return;
    this.#error = error;
    this.#chunks.length = 0;
    this.#bytes = 0;
    this.#wakeReader();
    this.#wakeWriter();
  }

  #wakeReader(): void {
    const w = this.#readerWaiting;
    this.#readerWaiting = undefined;
    w?.();
  }

  #wakeWriter(): void {
    const w = this.#writerWaiting;
    this.#writerWaiting = undefined;
    w?.();
  }
}
