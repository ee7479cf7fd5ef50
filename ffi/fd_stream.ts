/**
 * Web streams over a raw, non-blocking file descriptor (a PTY master, a virtio-serial port),
 * without blocking Deno's event loop.
 *
 * Reads and writes are plain non-blocking syscalls on the main thread; waiting for readiness goes
 * through the shared {@link poller} (one poll(2) on one blocking-pool thread for all fds). The fd
 * is closed only after the poller has let go of it: a poll still watching a closed and reused fd
 * number would otherwise report someone else's file. Deno.FsFile is not used because it
 * serialises a file's operations (a pending read would block every write) and a virtio port can
 * be opened only once.
 *
 * @module
 */

import * as libc from "./libc.ts";
import { poller } from "./poller.ts";

const { LINUX } = libc;

/**
 * Largest chunk handed out. Larger chunks (256 KiB) were measured to raise a streaming agent's
 * peak RSS (80 vs 63 MiB over 100 MiB of output): fewer, larger garbage buffers let V8 wait longer
 * before collecting them.
 */
const READ_CHUNK = 64 * 1024;

/** Options for {@link FdStream}. */
export interface FdStreamOptions {
  /** Treat EIO from read as end of stream (a PTY master whose slave side hung up). */
  eioIsEof?: boolean;
  /** Called once when the fd has been closed. */
  onClose?: () => void;
  /** `close()` ends the streams but leaves the fd open (the caller owns it). @default false */
  keepFdOpen?: boolean;
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
  #readStopped = false;
  #quietMs: number | null = null;
  #closed: Promise<void> | null = null;
  #scratch: Uint8Array<ArrayBuffer> | undefined;
  #readWait: AbortController | null = null;

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
      const revents = await this.#poll(LINUX.POLLOUT, null);
      if (typeof revents === "number" && revents & (LINUX.POLLERR | LINUX.POLLNVAL)) {
        throw new libc.LibcError("write", libc.ERRNO.EIO, `to fd ${this.fd}`);
      }
    }
  }

  /**
   * Ends {@link readable} at the first `quietMs` without any byte (used once a child has exited
   * but a background process may keep its pipe or terminal open). Before ending, the fd is checked
   * once more without waiting, so a slow wake-up on a loaded machine never drops ready output.
   */
  endWhenQuiet(quietMs: number): void {
    this.#quietMs = quietMs;
    // A read already waiting (without a deadline) starts over with this one.
    this.#readWait?.abort();
  }

  /**
   * Ends {@link readable} without reading another byte: a read waiting for data gives up, and
   * one that wakes up later finds the flag before it reads. Writes go on. (The agent stops
   * reading its port this way before its last frame of a detached session, so the next host's
   * bytes stay in the port for the next session.)
   */
  stopReading(): void {
    this.#readStopped = true;
    this.#readWait?.abort();
  }

  /** Closes the fd once no wait uses it (pending waits end at once). Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#closing = true;
    this.#closed = poller.release(this.fd).then(() => {
      if (!this.#options.keepFdOpen) libc.close(this.fd);
      this.#options.onClose?.();
    });
    return this.#closed;
  }

  [Symbol.dispose](): void {
    void this.close();
  }

  /**
   * Waits for `events`: the revents, "timeout" when `timeoutMs` passed first, or 0 when the wait
   * was cut short (close, or `endWhenQuiet` restarting a read wait).
   */
  async #poll(
    events: number,
    timeoutMs: number | null,
    forRead = false,
  ): Promise<number | "timeout"> {
    if (this.#closing) return 0;
    const abort = new AbortController();
    if (forRead) this.#readWait = abort;
    try {
      return await poller.wait(this.fd, events, {
        signal: abort.signal,
        ...(timeoutMs === null ? {} : { timeoutMs }),
      });
    } finally {
      if (forRead) this.#readWait = null;
    }
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>): Promise<void> {
    // One scratch buffer per stream; each chunk handed out is an exact-size copy, so a stream
    // allocates once per chunk (garbage is what makes a busy agent's RSS grow).
    const buf = this.#scratch ??= new Uint8Array(READ_CHUNK);
    for (;;) {
      if (this.#closing || this.#readStopped) {
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
      const revents = await this.#poll(LINUX.POLLIN, this.#quietMs, true);
      const readyMask = LINUX.POLLIN | LINUX.POLLHUP | LINUX.POLLERR;
      if (revents === "timeout" && (libc.pollNow(this.fd, LINUX.POLLIN) & readyMask) === 0) {
        // Quiet for the whole period after the child ended: stop here.
        void this.close();
        controller.close();
        return;
      }
    }
  }
}
