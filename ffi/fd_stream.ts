/**
 * Web streams over a raw, non-blocking file descriptor (a PTY master, a virtio-serial port),
 * without blocking Deno's event loop.
 *
 * Reads and writes are plain non-blocking syscalls on the main thread; waiting for readiness is a
 * `poll` on Deno's blocking pool, at most {@link POLL_SLICE_MS} at a time so a close is noticed
 * quickly. The fd is closed only when no poll is in flight: a poll still watching a closed and
 * reused fd number would otherwise read someone else's file. Deno.FsFile is not used because it
 * serialises a file's operations (a pending read would block every write) and a virtio port can
 * be opened only once.
 *
 * @module
 */

import * as libc from "./libc.ts";

const { LINUX } = libc;

/** Longest single wait for readiness; bounds how late a close is noticed. */
export const POLL_SLICE_MS = 200;
/** Bytes read per chunk. */
const READ_CHUNK = 64 * 1024;

/** Options for {@link FdStream}. */
export interface FdStreamOptions {
  /** Treat EIO from read as end of stream (a PTY master whose slave side hung up). */
  eioIsEof?: boolean;
  /** Called once when the fd has been closed. */
  onClose?: () => void;
}

/** A non-blocking fd as a readable stream plus an awaited `write`. Owns the fd. */
export class FdStream {
  /** The fd (set to non-blocking by the constructor). */
  readonly fd: number;
  /** Bytes read from the fd; ends at EOF (or EIO with `eioIsEof`), on close, or when quiet. */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Bytes written to the fd; `close()` closes the fd. */
  readonly writable: WritableStream<Uint8Array>;

  #options: FdStreamOptions;
  #closing = false;
  #closed = false;
  #polls = 0;
  #quietMs: number | null = null;

  /** Takes ownership of `fd` and makes it non-blocking. */
  constructor(fd: number, options: FdStreamOptions = {}) {
    this.fd = fd;
    this.#options = options;
    libc.setNonBlocking(fd, true);
    this.readable = new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: (controller) => this.#pull(controller),
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.close(),
      abort: () => this.close(),
    });
  }

  /** True once `close` was called. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Writes all of `data`, waiting while the fd cannot take more. */
  async write(data: Uint8Array): Promise<void> {
    // FFI wants an ArrayBuffer-backed view; copy only if given something else.
    let rest: Uint8Array<ArrayBuffer> = data.buffer instanceof ArrayBuffer
      ? data as Uint8Array<ArrayBuffer>
      : new Uint8Array(data);
    while (rest.length > 0) {
      if (this.#closing) {
        throw new libc.LibcError("write", libc.ERRNO.EBADF, `to closed fd ${this.fd}`);
      }
      const n = libc.writeNonBlocking(this.fd, rest);
      if (n > 0) {
        rest = rest.subarray(n);
        continue;
      }
      const revents = await this.#poll(LINUX.POLLOUT, POLL_SLICE_MS);
      if (revents & (LINUX.POLLERR | LINUX.POLLNVAL)) {
        throw new libc.LibcError("write", libc.ERRNO.EIO, `to fd ${this.fd}`);
      }
    }
  }

  /**
   * Ends {@link readable} at the first `quietMs` without any byte (used once a PTY's child has
   * exited but a background process may keep the terminal open).
   */
  endWhenQuiet(quietMs: number): void {
    this.#quietMs = quietMs;
  }

  /** Closes the fd (after any in-flight wait returns). Idempotent. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#maybeCloseFd();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #maybeCloseFd(): void {
    if (!this.#closing || this.#closed || this.#polls > 0) return;
    this.#closed = true;
    libc.close(this.fd);
    this.#options.onClose?.();
  }

  async #poll(events: number, timeoutMs: number): Promise<number> {
    this.#polls++;
    try {
      return await libc.pollAsync(this.fd, events, timeoutMs);
    } finally {
      this.#polls--;
      this.#maybeCloseFd();
    }
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>): Promise<void> {
    const buf = new Uint8Array(READ_CHUNK);
    for (;;) {
      if (this.#closing) {
        controller.close();
        return;
      }
      let n: number | null;
      try {
        n = libc.readNonBlocking(this.fd, buf);
      } catch (e) {
        this.close();
        if (
          this.#options.eioIsEof && e instanceof libc.LibcError && e.errno === libc.ERRNO.EIO
        ) {
          controller.close();
          return;
        }
        throw e;
      }
      if (n === 0) {
        this.close();
        controller.close();
        return;
      }
      if (n !== null) {
        // Some devices return little per read (a virtio port: one 4 KiB buffer); gather what is
        // ready into one chunk, so consumers see fewer, larger chunks.
        let filled = n;
        while (filled < buf.length) {
          let more: number | null;
          try {
            more = libc.readNonBlocking(this.fd, buf.subarray(filled));
          } catch {
            break; // Reported by the next pull, after these bytes are delivered.
          }
          if (!more) break;
          filled += more;
        }
        controller.enqueue(buf.slice(0, filled));
        return;
      }
      const quiet = this.#quietMs;
      const revents = await this.#poll(LINUX.POLLIN, quiet ?? POLL_SLICE_MS);
      if (revents === 0 && quiet !== null) {
        this.close();
        controller.close();
        return;
      }
    }
  }
}
