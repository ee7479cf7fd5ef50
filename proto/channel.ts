/**
 * One channel of a stream: a direction pair of bytes with its own credit-based flow control.
 * It talks to its stream only through a {@linkcode ChannelLink}, and hears from it only through
 * the {@linkcode ChannelInbox} {@linkcode MuxChannel.create} hands to the stream.
 *
 * @module
 */

import { FrameFlag, FrameType, MAX_WINDOW } from "./constants.ts";
import { type AgentErrorPayload, ConnectionError, toWireError } from "./errors.ts";
import { windowPayload } from "./frame.ts";

const EMPTY = new Uint8Array(0);

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** What a channel needs of its stream. */
export interface ChannelLink {
  /** The stream's id (for messages). */
  readonly streamId: number;
  /** True once the stream has finished. */
  finished(): boolean;
  /** Largest DATA payload the connection sends. */
  maxPayload(): number;
  /** Queues a frame of this stream; waits while the connection's out queue is full. */
  send(type: FrameType, flags: number, channel: number, payload: Uint8Array): Promise<void>;
  /** Resets the stream, telling the peer why. */
  reset(error: AgentErrorPayload): void;
}

/** How a stream delivers to its channel what the peer sent. */
export interface ChannelInbox {
  /** DATA (`fin`: the peer's last bytes on this channel). */
  data(payload: Uint8Array, fin: boolean): void;
  /** WINDOW: more send credit. */
  window(increment: number): void;
  /** The stream finished: `error` undefined = clean CLOSE (EOF after queued data). */
  finish(error: Error | undefined, sendError: Error): void;
}

/** One direction-pair of bytes within a stream, with its own flow control. */
export class MuxChannel {
  /** Channel number (0..3). */
  readonly index: number;
  readonly #link: ChannelLink;

  // receive side
  #queue: Uint8Array[] = [];
  #recvEnded = false; // FIN or stream finished (after queued data)
  #recvError: Error | undefined;
  #recvWindow: number; // bytes the peer may still send
  #recvGrant: number; // window size we hand out
  #consumed = 0; // bytes read by the app since the last WINDOW
  #discarding = false;
  #pullWaiter: (() => void) | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;

  // send side
  #credit: number;
  #creditWaiters: Waiter[] = [];
  #sentFin = false;
  #sendError: Error | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  private constructor(link: ChannelLink, index: number, recvWindow: number, sendWindow: number) {
    this.#link = link;
    this.index = index;
    this.#recvWindow = recvWindow;
    this.#recvGrant = recvWindow;
    this.#credit = sendWindow;
  }

  /** Bytes from the peer on this channel; ends at the peer's FIN (or CLOSE). */
  get readable(): ReadableStream<Uint8Array> {
    this.#readable ??= new ReadableStream<Uint8Array>({
      pull: (controller) => this.#pull(controller),
      cancel: () => this.#discard(),
    }, { highWaterMark: 0 });
    return this.#readable;
  }

  /**
   * Bytes to the peer on this channel; `close()` sends FIN, `abort()` resets the stream.
   * Written chunks are queued without copying: do not modify a chunk after writing it.
   */
  get writable(): WritableStream<Uint8Array> {
    this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.closeWrite(),
      abort: (reason) => {
        // pipeTo() aborts with the source's error: keep its kind (an AgentError's code, a
        // Deno error's mapped code) so the peer sees why.
        this.#link.reset(
          reason instanceof Error
            ? toWireError(reason)
            : { code: "cancelled", message: `Cannot write to stream: aborted (${reason})` },
        );
      },
    }, { highWaterMark: 1 });
    return this.#writable;
  }

  /** Bytes received and not yet read by the application. */
  get bufferedBytes(): number {
    let n = 0;
    for (const c of this.#queue) n += c.length;
    return n;
  }

  /** Remaining send credit (bytes the peer can take now). */
  get sendCredit(): number {
    return this.#credit;
  }

  /** Sends bytes, waiting for credit; resolves once queued for the transport. */
  async write(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    const max = this.#link.maxPayload();
    while (offset < chunk.length) {
      if (this.#sendError) throw this.#sendError;
      if (this.#sentFin) throw new TypeError("Cannot write to channel: it was already closed");
      if (this.#credit === 0) {
        await new Promise<void>((resolve, reject) => this.#creditWaiters.push({ resolve, reject }));
        continue;
      }
      const n = Math.min(chunk.length - offset, this.#credit, max);
      this.#credit -= n;
      const piece = offset === 0 && n === chunk.length ? chunk : chunk.subarray(offset, offset + n);
      offset += n;
      await this.#link.send(FrameType.DATA, 0, this.index, piece);
    }
  }

  /** Sends FIN: no more bytes from us on this channel. Idempotent. */
  async closeWrite(): Promise<void> {
    if (this.#sentFin) return;
    if (this.#sendError) throw this.#sendError;
    this.#sentFin = true;
    await this.#link.send(FrameType.DATA, FrameFlag.FIN, this.index, EMPTY);
  }

  // ----------------------------------------------------------------------- receiving (the inbox)

  /**
   * Creates channel `index` of a stream and the inbox through which its stream delivers what
   * the peer sends; the inbox is for the stream alone.
   */
  static create(
    link: ChannelLink,
    index: number,
    windows: { recv: number; send: number },
  ): { channel: MuxChannel; inbox: ChannelInbox } {
    const channel = new MuxChannel(link, index, windows.recv, windows.send);
    return {
      channel,
      inbox: {
        data: (payload, fin) => channel.#receiveData(payload, fin),
        window: (increment) => channel.#receiveWindow(increment),
        finish: (error, sendError) => channel.#finish(error, sendError),
      },
    };
  }

  #receiveData(payload: Uint8Array, fin: boolean): void {
    if (this.#recvEnded) {
      throw new ConnectionError(
        "malformed",
        `Cannot decode frame: DATA on stream ${this.#link.streamId} channel ${this.index} after FIN`,
      );
    }
    if (payload.length > this.#recvWindow) {
      throw new ConnectionError(
        "flow_control",
        `Cannot accept DATA on stream ${this.#link.streamId} channel ${this.index}: ` +
          `${payload.length} bytes exceed the remaining window of ${this.#recvWindow}`,
      );
    }
    this.#recvWindow -= payload.length;
    if (payload.length > 0) {
      if (this.#discarding) this.#credit_back(payload.length);
      // The payload is a view into the decoder's buffer: this is the one copy a byte makes.
      else this.#queue.push(payload.slice());
    }
    if (fin) this.#recvEnded = true;
    this.#wakePull();
  }

  #receiveWindow(increment: number): void {
    if (increment === 0 || this.#credit + increment > MAX_WINDOW) {
      throw new ConnectionError(
        "flow_control",
        `Cannot accept WINDOW on stream ${this.#link.streamId} channel ${this.index}: ` +
          `increment ${increment} on credit ${this.#credit}`,
      );
    }
    this.#credit += increment;
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w.resolve();
  }

  /** The stream finished: `error` undefined = clean CLOSE (EOF after queued data). */
  #finish(error: Error | undefined, sendError: Error): void {
    if (!this.#recvEnded) {
      this.#recvEnded = true;
      this.#recvError = error;
    }
    this.#sendError ??= sendError;
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w.reject(sendError);
    this.#wakePull();
  }

  #wakePull(): void {
    const w = this.#pullWaiter;
    this.#pullWaiter = undefined;
    w?.();
  }

  #credit_back(n: number): void {
    this.#consumed += n;
    // Return credit in batches (a quarter window) to keep WINDOW frames rare.
    if (this.#consumed >= this.#recvGrant / 4 && !this.#link.finished()) {
      const inc = this.#consumed;
      this.#consumed = 0;
      this.#recvWindow += inc;
      void this.#link.send(FrameType.WINDOW, 0, this.index, windowPayload(inc)).catch(() => {});
    }
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (true) {
      const chunk = this.#queue.shift();
      if (chunk) {
        controller.enqueue(chunk);
        this.#credit_back(chunk.length);
        return;
      }
      if (this.#recvEnded) {
        if (this.#recvError) controller.error(this.#recvError);
        else controller.close();
        return;
      }
      await new Promise<void>((resolve) => this.#pullWaiter = resolve);
    }
  }

  /**
   * Drops everything received on this channel, now and later, returning the credit at once (as
   * cancelling the readable does).
   */
  discard(): void {
    this.#discard();
  }

  #discard(): void {
    this.#discarding = true;
    let n = 0;
    for (const c of this.#queue) n += c.length;
    this.#queue = [];
    if (n > 0) this.#credit_back(n);
  }
}
