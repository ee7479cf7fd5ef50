/**
 * One logical stream of the agent protocol: its request, up to four channels, control
 * messages and an end. It talks to its connection only through a {@linkcode StreamLink}, and
 * hears from it only through the {@linkcode StreamInbox} {@linkcode MuxStream.create} hands to
 * the connection.
 *
 * @module
 */

import { type ChannelInbox, type ChannelLink, MuxChannel } from "./channel.ts";
import {
  FrameFlag,
  FrameType,
  frameTypeName,
  MAX_CHANNELS,
  MAX_QUEUED_MESSAGES,
} from "./constants.ts";
import {
  AgentError,
  agentErrorFromWire,
  type AgentErrorPayload,
  ConnectionError,
  toWireError,
} from "./errors.ts";
import { decodeJson, encodeJson, type Frame, windowIncrement } from "./frame.ts";

/** What a stream needs of its connection. */
export interface StreamLink {
  /** Queues a frame; waits while the out queue is full. */
  send(
    type: FrameType,
    flags: number,
    channel: number,
    stream: number,
    payload: Uint8Array,
  ): Promise<void>;
  /** Largest DATA payload to send. */
  maxPayload(): number;
  /** The error that ended the connection, once it ended. */
  endError(): ConnectionError | undefined;
  /** Removes a finished stream. */
  forget(stream: MuxStream): void;
}

/** How the connection delivers to a stream what the peer sent. */
export interface StreamInbox {
  /** A frame addressed to the stream. */
  receive(frame: Frame): void;
  /** The connection ended with `error`. */
  end(error: Error): void;
}

/**
 * One logical stream: a request header, up to four channels, control messages, and an end
 * (CLOSE with a result from the side that accepted it, or RESET with an error from either side).
 */
export class MuxStream {
  /** Stream id (odd: opened by the host, even: by the guest). */
  readonly id: number;
  /** The OPEN header (the request). */
  readonly request: Record<string, unknown>;
  /** True if this end opened the stream. */
  readonly initiator: boolean;
  /**
   * Resolves with the CLOSE payload; rejects with {@link AgentError} on RESET or
   * {@link ConnectionError} if the connection ends first.
   */
  readonly result: Promise<Record<string, unknown>>;
  /** Aborted when the stream is reset (by either side) or the connection ends; reason = error. */
  readonly signal: AbortSignal;

  readonly #link: StreamLink;
  /** Its channels' view of this stream. */
  readonly #channelLink: ChannelLink;
  #channels: ({ channel: MuxChannel; inbox: ChannelInbox } | undefined)[] = [];
  #recvWindow: number;
  #sendWindow: number;
  #messages: Record<string, unknown>[] = [];
  #messageWaiter: (() => void) | undefined;
  #messageHandler: ((message: Record<string, unknown>) => void) | undefined;
  #finished = false;
  #recvError: Error | undefined;
  #sendError: Error | undefined;
  #resolve!: (v: Record<string, unknown>) => void;
  #reject!: (e: Error) => void;
  #abort = new AbortController();

  private constructor(
    link: StreamLink,
    id: number,
    request: Record<string, unknown>,
    initiator: boolean,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.#link = link;
    this.id = id;
    this.#channelLink = {
      streamId: id,
      finished: () => this.#finished,
      maxPayload: () => link.maxPayload(),
      send: (type, flags, channel, payload) => link.send(type, flags, channel, id, payload),
      reset: (error) => this.reset(error),
    };
    this.request = request;
    this.initiator = initiator;
    this.#recvWindow = recvWindow;
    this.#sendWindow = sendWindow;
    this.signal = this.#abort.signal;
    this.result = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Nobody may await the result (e.g. the accepting side); never an unhandled rejection.
    this.result.catch(() => {});
  }

  /**
   * Creates a stream of the connection `link` belongs to, and the inbox through which the
   * connection delivers its frames; the inbox is for the connection alone.
   */
  static create(
    link: StreamLink,
    init: {
      id: number;
      request: Record<string, unknown>;
      initiator: boolean;
      recvWindow: number;
      sendWindow: number;
    },
  ): { stream: MuxStream; inbox: StreamInbox } {
    const stream = new MuxStream(
      link,
      init.id,
      init.request,
      init.initiator,
      init.recvWindow,
      init.sendWindow,
    );
    return {
      stream,
      inbox: {
        receive: (frame) => stream.#receive(frame),
        end: (error) => stream.#finishLocal(error, error),
      },
    };
  }

  /** True once CLOSE or RESET was sent or received, or the connection ended. */
  get finished(): boolean {
    return this.#finished;
  }

  /** Returns channel `index` (0..3), creating its state on first use. */
  channel(index: number): MuxChannel {
    if (!Number.isInteger(index) || index < 0 || index >= MAX_CHANNELS) {
      throw new RangeError(`Cannot use channel ${index}: must be 0..${MAX_CHANNELS - 1}`);
    }
    let ch = this.#channels[index];
    if (!ch) {
      ch = MuxChannel.create(this.#channelLink, index, {
        recv: this.#recvWindow,
        send: this.#sendWindow,
      });
      this.#channels[index] = ch;
      if (this.#finished) {
        ch.inbox.finish(this.#recvError, this.#sendError ?? closedError(this.id));
      }
    }
    return ch.channel;
  }

  /** Channel 0's readable. */
  get readable(): ReadableStream<Uint8Array> {
    return this.channel(0).readable;
  }

  /** Channel 0's writable. */
  get writable(): WritableStream<Uint8Array> {
    return this.channel(0).writable;
  }

  /** Sends a MESSAGE (a JSON control message) on this stream. */
  send(message: Record<string, unknown>): Promise<void> {
    if (this.#finished) return Promise.reject(this.#link.endError() ?? closedError(this.id));
    return this.#link.send(FrameType.MESSAGE, 0, 0, this.id, encodeJson(message));
  }

  /**
   * Delivers MESSAGE frames to `handler` synchronously, in wire order relative to DATA (a
   * `resize` sent before some terminal input is handled before that input can be read), instead
   * of queuing them for {@link nextMessage}. Messages already queued are delivered at once.
   * A handler that throws resets the stream with the error.
   */
  onMessage(handler: (message: Record<string, unknown>) => void): void {
    this.#messageHandler = handler;
    for (const m of this.#messages.splice(0)) this.#deliver(m);
  }

  #deliver(message: Record<string, unknown>): void {
    try {
      this.#messageHandler!(message);
    } catch (err) {
      this.reset(toWireError(err, "Cannot handle message"));
    }
  }

  /** Waits for the next MESSAGE; `undefined` once the stream has finished and none are left. */
  async nextMessage(): Promise<Record<string, unknown> | undefined> {
    while (true) {
      const m = this.#messages.shift();
      if (m) return m;
      if (this.#finished) return undefined;
      await new Promise<void>((resolve) => this.#messageWaiter = resolve);
    }
  }

  /** Iterates over MESSAGE frames until the stream finishes. */
  async *messages(): AsyncIterableIterator<Record<string, unknown>> {
    while (true) {
      const m = await this.nextMessage();
      if (!m) return;
      yield m;
    }
  }

  /**
   * Finishes the stream with a result (only the side that accepted the stream may). Close your
   * channel writables first: data still waiting for credit is dropped.
   */
  async close(result: Record<string, unknown> = {}): Promise<void> {
    if (this.initiator) {
      throw new TypeError("Cannot close stream: only the accepting side sends CLOSE; use reset()");
    }
    if (this.#finished) return;
    const payload = encodeJson(result);
    this.#finishLocal(undefined, closedError(this.id));
    await this.#link.send(FrameType.CLOSE, 0, 0, this.id, payload);
  }

  /** Aborts the stream from this side, telling the peer why. Idempotent. */
  reset(error: AgentErrorPayload | AgentError): void {
    if (this.#finished) return;
    const wire = error instanceof AgentError ? error.toWire() : error;
    const err = agentErrorFromWire(wire);
    this.#finishLocal(err, err);
    try {
      void this.#link.send(FrameType.RESET, 0, 0, this.id, encodeJson(wire)).catch(() => {});
    } catch {
      // Connection already gone: the peer forgets the stream anyway.
    }
  }

  // ------------------------------------------------------------------------------ receiving

  #inbox(index: number): ChannelInbox {
    this.channel(index);
    return this.#channels[index]!.inbox;
  }

  /** Handles a frame addressed to this stream. */
  #receive(frame: Frame): void {
    switch (frame.type) {
      case FrameType.DATA:
        this.#inbox(frame.channel).data(frame.payload, (frame.flags & FrameFlag.FIN) !== 0);
        return;
      case FrameType.WINDOW:
        this.#inbox(frame.channel).window(windowIncrement(frame.payload));
        return;
      case FrameType.MESSAGE: {
        const message = decodeJson(frame.payload, frame.type);
        if (this.#messageHandler) {
          this.#deliver(message);
          return;
        }
        if (this.#messages.length >= MAX_QUEUED_MESSAGES) {
          this.reset({
            code: "protocol",
            message: `Cannot queue message: ${MAX_QUEUED_MESSAGES} unread messages on stream`,
          });
          return;
        }
        this.#messages.push(message);
        const w = this.#messageWaiter;
        this.#messageWaiter = undefined;
        w?.();
        return;
      }
      case FrameType.CLOSE: {
        if (!this.initiator) {
          throw new ConnectionError(
            "malformed",
            `Cannot decode frame: CLOSE for stream ${this.id} from the side that opened it`,
          );
        }
        const result = decodeJson(frame.payload, frame.type);
        this.#finishLocal(undefined, closedError(this.id));
        this.#resolve(result);
        return;
      }
      case FrameType.RESET: {
        const err = agentErrorFromWire(decodeJson(frame.payload, frame.type));
        this.#finishLocal(err, err);
        return;
      }
      default:
        throw new ConnectionError(
          "malformed",
          `Cannot decode frame: unexpected ${frameTypeName(frame.type)} on stream ${this.id}`,
        );
    }
  }

  #finishLocal(recvError: Error | undefined, sendError: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#recvError = recvError;
    this.#sendError = sendError;
    this.#link.forget(this);
    for (const ch of this.#channels) ch?.inbox.finish(recvError, sendError);
    if (recvError) {
      this.#reject(recvError);
      this.#abort.abort(recvError);
    }
    const w = this.#messageWaiter;
    this.#messageWaiter = undefined;
    w?.();
  }
}

function closedError(id: number): AgentError {
  return new AgentError("cancelled", `Cannot use stream ${id}: it has finished`);
}
