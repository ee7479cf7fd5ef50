/**
 * Frame transports between a VM's NIC and the stack.
 *
 * - `StreamLink`: QEMU's `-netdev stream` (and `-netdev socket`): each frame is a 4-byte
 *   big-endian length then the frame, over a stream socket (a `Deno.Conn`).
 * - `DatagramLink`: one frame per datagram over a connected Unix datagram socket (macOS
 *   `VZFileHandleNetworkDeviceAttachment`, a socketpair; QEMU's `-netdev dgram`), through FFI.
 * - `TracingLink`: wraps any link and shows every frame to a callback (pcap capture, logs).
 *
 * Sending never blocks the caller: frames queue up to a byte cap and `send` returns false
 * beyond it; `flush()` resolves when the queue has been written. Frames are written in batches
 * (one `write` for many frames), which is what makes a user-space stack fast.
 *
 * @module
 */

import { libc, poller } from "../ffi/mod.ts";

/** Largest frame accepted (QEMU's NET_BUFSIZE is 4096 + 65536). */
export const MAX_FRAME_LEN: number = 4096 + 65536;
/** Smallest frame accepted: an Ethernet header. */
export const MIN_FRAME_LEN: number = 14;
/** Default cap of queued outgoing bytes. */
export const DEFAULT_SEND_QUEUE_BYTES: number = 4 * 1024 * 1024;
const READ_CHUNK = 256 * 1024;

/** Why a link failed. */
export type LinkErrorCode = "frame-too-large" | "frame-too-small" | "closed";

/** A link-level failure (a corrupt or hostile peer). */
export class LinkError extends Error {
  /** What went wrong. */
  readonly code: LinkErrorCode;
  /** Builds the error; `cause` is the underlying error if any. */
  constructor(code: LinkErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LinkError";
    this.code = code;
  }
}

/** A bidirectional frame transport. */
export interface FrameLink {
  /** The next batch of frames (at least one), or null once the peer closed. */
  receive(): Promise<Uint8Array[] | null>;
  /** Queues one frame (the link keeps the array); false when the queue is full. */
  send(frame: Uint8Array): boolean;
  /** Resolves when everything queued so far is written (or the link closed). */
  flush(): Promise<void>;
  /** Closes the link; pending receives resolve to null. */
  close(): void;
}

/** Options of the queued writer shared by both links. */
export interface LinkOptions {
  /** Cap on queued outgoing bytes (default 4 MiB). */
  maxQueuedBytes?: number;
}

/** Queues frames and writes them from one loop, so writes never interleave (base of links). */
export abstract class QueuedWriter {
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false;
  #flushWaiters: Array<() => void> = [];
  /** Set once the link is closed or failed. */
  protected closed = false;
  readonly #maxQueued: number;

  /** A writer with a queue cap. */
  constructor(opts: LinkOptions) {
    this.#maxQueued = opts.maxQueuedBytes ?? DEFAULT_SEND_QUEUE_BYTES;
  }

  /** Writes a batch of frames; resolves when written. */
  protected abstract writeBatch(frames: Uint8Array[], bytes: number): Promise<void>;

  /** Queues one frame; false when the queue is full. */
  send(frame: Uint8Array): boolean {
    if (this.closed) return true; // dropped: nobody is listening any more
    if (this.#queuedBytes >= this.#maxQueued) return false;
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#writing) {
      this.#writing = true;
      queueMicrotask(() => this.#writeLoop());
    }
    return true;
  }

  /** Resolves when the queue has been written. */
  flush(): Promise<void> {
    if (this.#queue.length === 0 && !this.#writing) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.closed) {
        const batch = this.#queue;
        const bytes = this.#queuedBytes;
        this.#queue = [];
        this.#queuedBytes = 0;
        await this.writeBatch(batch, bytes);
      }
    } catch {
      // The peer went away; receive() reports the end.
      this.closed = true;
      this.#queue = [];
      this.#queuedBytes = 0;
    } finally {
      this.#writing = false;
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Marks the link closed and wakes every flush waiter. */
  protected releaseWriters(): void {
    this.closed = true;
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of waiters) w();
  }
}

/** Length-prefixed frames over a stream (QEMU `-netdev stream`). */
export class StreamLink extends QueuedWriter implements FrameLink {
  readonly #conn: Deno.Conn;
  #carry: Uint8Array = new Uint8Array(0);
  readonly #readBuf = new Uint8Array(READ_CHUNK);

  /** Wraps a connected stream socket. */
  constructor(conn: Deno.Conn, opts: LinkOptions = {}) {
    super(opts);
    this.#conn = conn;
  }

  /** Reads until at least one whole frame is available. Throws LinkError on a bad length. */
  async receive(): Promise<Uint8Array[] | null> {
    for (;;) {
      const frames = this.#split();
      if (frames.length > 0) return frames;
      if (this.closed) return null;
      let n: number | null;
      try {
        n = await this.#conn.read(this.#readBuf);
      } catch (e) {
        if (this.closed) return null;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.ConnectionReset) {
          return null;
        }
        throw e;
      }
      if (n === null) return null;
      const chunk = this.#readBuf.subarray(0, n);
      if (this.#carry.length === 0) {
        this.#carry = chunk.slice();
      } else {
        const merged = new Uint8Array(this.#carry.length + n);
        merged.set(this.#carry);
        merged.set(chunk, this.#carry.length);
        this.#carry = merged;
      }
    }
  }

  #split(): Uint8Array[] {
    const frames: Uint8Array[] = [];
    const buf = this.#carry;
    let pos = 0;
    while (buf.length - pos >= 4) {
      const len =
        ((buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!) >>> 0;
      if (len > MAX_FRAME_LEN) {
        throw new LinkError(
          "frame-too-large",
          `Cannot receive frame: length ${len} exceeds ${MAX_FRAME_LEN}`,
        );
      }
      if (len < MIN_FRAME_LEN) {
        throw new LinkError(
          "frame-too-small",
          `Cannot receive frame: length ${len} is below ${MIN_FRAME_LEN}`,
        );
      }
      if (buf.length - pos - 4 < len) break;
      frames.push(buf.subarray(pos + 4, pos + 4 + len));
      pos += 4 + len;
    }
    if (pos > 0) this.#carry = pos === buf.length ? new Uint8Array(0) : buf.slice(pos);
    return frames;
  }

  /** Writes one batch of queued frames. */
  protected async writeBatch(frames: Uint8Array[], bytes: number): Promise<void> {
    const out = new Uint8Array(bytes + 4 * frames.length);
    const view = new DataView(out.buffer);
    let pos = 0;
    for (const f of frames) {
      view.setUint32(pos, f.length);
      out.set(f, pos + 4);
      pos += 4 + f.length;
    }
    let off = 0;
    while (off < out.length) off += await this.#conn.write(out.subarray(off));
  }

  /** Closes the socket. */
  close(): void {
    if (this.closed) return;
    this.releaseWriters();
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer
    }
  }
}

/** Most frames one {@linkcode DatagramLink.receive} returns (one batch). */
const MAX_DATAGRAM_BATCH = 64;
/**
 * Send buffer asked for a datagram link's socket. A Unix datagram stays charged to the sender
 * until the peer reads it, so the default (208 KiB) lets only three 64 KiB frames be in flight.
 * The kernel caps it at `net.core.wmem_max` (4 MiB on Debian).
 */
const DATAGRAM_SEND_BUFFER = 4 * 1024 * 1024;

/**
 * One frame per datagram over a connected Unix datagram socket: the shape macOS's
 * `VZFileHandleNetworkDeviceAttachment` hands over (one end of a `socketpair`), and QEMU's
 * `-netdev dgram` (a socket bound to a path, connected to QEMU's).
 *
 * The socket is a raw fd used through FFI (`ffi/libc.ts`): Deno's own Unix datagram sockets
 * need `--unstable-net`, cannot `connect`, and fail a send while a receive is pending on the
 * same socket ("Busy"). Reads and writes are `recv`/`send` with `MSG_DONTWAIT` (the fd itself
 * may be blocking: macOS cannot make it non-blocking through FFI); waiting for readiness goes
 * through the shared poller (`ffi/poller.ts`). A receive returns every datagram ready (up
 * to 64), so a busy link costs one wait per batch, not per frame. Datagrams are never split or
 * merged, so there is no framing to get wrong: one shorter than an Ethernet header or longer
 * than {@linkcode MAX_FRAME_LEN} is dropped (and counted).
 *
 * A datagram peer that goes away is not signalled to a reader (no end-of-file): the link learns
 * it when a send is refused (`ECONNREFUSED`), and then ends like a closed stream.
 */
export class DatagramLink extends QueuedWriter implements FrameLink {
  readonly #fd: number;
  readonly #buf = new Uint8Array(MAX_FRAME_LEN + 1);
  readonly #waits = new AbortController();
  #fdClosed = false;
  #dropped = 0;

  /** Takes ownership of `fd`, a connected Unix datagram socket. */
  constructor(fd: number, opts: LinkOptions = {}) {
    super(opts);
    this.#fd = fd;
    try {
      libc.setSocketBuffer(fd, "send", DATAGRAM_SEND_BUFFER);
    } catch { /* not a socket we may tune: the default works, slower */ }
  }

  /** Datagrams dropped for their size. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Returns the datagrams ready (at least one), waiting for the first; null once closed. */
  async receive(): Promise<Uint8Array[] | null> {
    for (;;) {
      if (this.closed) return null;
      const frames: Uint8Array[] = [];
      while (frames.length < MAX_DATAGRAM_BATCH) {
        let n: number | null;
        try {
          n = libc.receiveNonBlocking(this.#fd, this.#buf);
        } catch (e) {
          if (this.closed) return null;
          throw new LinkError("closed", `Cannot receive frame: ${(e as Error).message}`, {
            cause: e,
          });
        }
        if (n === null) break;
        if (n < MIN_FRAME_LEN || n > MAX_FRAME_LEN) {
          this.#dropped++;
          continue;
        }
        frames.push(this.#buf.slice(0, n));
      }
      if (frames.length > 0) return frames;
      await poller.wait(this.#fd, libc.HOST_ABI.POLLIN, { signal: this.#waits.signal });
    }
  }

  /** Writes one batch of queued frames, one datagram each. */
  protected async writeBatch(frames: Uint8Array[]): Promise<void> {
    for (const f of frames) {
      const frame: Uint8Array<ArrayBuffer> = f.buffer instanceof ArrayBuffer
        ? f as Uint8Array<ArrayBuffer>
        : new Uint8Array(f);
      for (;;) {
        if (this.closed) return;
        let n: number;
        try {
          n = libc.sendNonBlocking(this.#fd, frame);
        } catch (e) {
          const errno = e instanceof libc.LibcError ? e.errno : 0;
          if (errno === libc.ERRNO.EMSGSIZE) {
            this.#dropped++;
            break;
          }
          if (errno === libc.ERRNO.ECONNREFUSED || errno === libc.ERRNO.ENOTCONN) {
            // The peer is gone: end the link as a stream's end of file would.
            this.#end();
            return;
          }
          if (errno === libc.ERRNO.ENOBUFS) {
            // macOS (BSD sources; not yet seen): the peer's queue is full, and poll reports a
            // datagram socket writable whatever its peer holds. Linux says EAGAIN (below).
            await poller.sleep(1, this.#waits.signal);
            continue;
          }
          throw e;
        }
        if (n > 0) break;
        await poller.wait(this.#fd, libc.HOST_ABI.POLLOUT, { signal: this.#waits.signal });
      }
    }
  }

  #end(): void {
    this.releaseWriters();
    this.#waits.abort();
  }

  /** Ends the link and closes the socket (once no poll watches it). */
  close(): void {
    this.#end();
    if (this.#fdClosed) return;
    this.#fdClosed = true;
    void poller.release(this.#fd).then(() => {
      try {
        libc.close(this.#fd);
      } catch { /* already closed */ }
    });
  }
}

/**
 * Opens a Unix datagram socket bound at `path` (a stale file there is replaced), for a
 * {@linkcode DatagramLink} once {@linkcode connectDatagramSocket} has connected it.
 */
export function bindDatagramSocket(path: string): number {
  try {
    Deno.removeSync(path);
  } catch { /* not there */ }
  const fd = libc.unixDatagramSocket();
  try {
    libc.bindUnix(fd, path);
  } catch (err) {
    libc.close(fd);
    throw err;
  }
  return fd;
}

/**
 * Connects datagram socket `fd` to `peer` as soon as that path is bound (QEMU binds its end
 * while it starts), retrying every 5 ms. Resolves false if `signal` aborts first.
 */
export async function connectDatagramSocket(
  fd: number,
  peer: string,
  options: { signal?: AbortSignal } = {},
): Promise<boolean> {
  for (;;) {
    if (options.signal?.aborted) return false;
    try {
      libc.connectUnix(fd, peer);
      return true;
    } catch (err) {
      const errno = err instanceof libc.LibcError ? err.errno : 0;
      if (errno !== libc.ERRNO.ENOENT && errno !== libc.ERRNO.ECONNREFUSED) throw err;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, 5);
      function done() {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", done);
        resolve();
      }
      options.signal?.addEventListener("abort", done, { once: true });
    });
  }
}

/** Direction of a traced frame. */
export type FrameDirection = "from-guest" | "to-guest";

/** Shows every frame to `onFrame` (pcap capture, logging), passing everything through. */
export class TracingLink implements FrameLink {
  readonly #inner: FrameLink;
  readonly #onFrame: (direction: FrameDirection, frame: Uint8Array) => void;

  /** Wraps `inner`. */
  constructor(inner: FrameLink, onFrame: (direction: FrameDirection, frame: Uint8Array) => void) {
    this.#inner = inner;
    this.#onFrame = onFrame;
  }

  /** Receives from the inner link, showing each frame. */
  async receive(): Promise<Uint8Array[] | null> {
    const frames = await this.#inner.receive();
    if (frames) { for (const f of frames) this.#onFrame("from-guest", f); }
    return frames;
  }

  /** Sends through the inner link, showing the frame if accepted. */
  send(frame: Uint8Array): boolean {
    const ok = this.#inner.send(frame);
    if (ok) this.#onFrame("to-guest", frame);
    return ok;
  }

  /** Flushes the inner link. */
  flush(): Promise<void> {
    return this.#inner.flush();
  }

  /** Closes the inner link. */
  close(): void {
    this.#inner.close();
  }
}
