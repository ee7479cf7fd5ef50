/**
 * Stream multiplexer of the agent protocol: many logical streams over one ordered byte stream
 * (a virtio-serial port, a vsock or Unix socket), each with up to four channels carrying bytes
 * in both directions under credit-based flow control.
 *
 * The same class runs on both ends: the host and the agent each call {@link Mux.connect} on
 * their end of the transport; either side may {@link Mux.open} streams (the host uses odd ids,
 * the agent even ones) and {@link Mux.accept} the other's. Wire format: docs/agent_protocol.md.
 *
 * Memory bounds: a receiver never holds more than its announced window per channel (a peer
 * that sends beyond it breaks the connection), the outgoing queue is bounded by
 * `OUT_HIGH_WATER` (writers wait), and a stalled reader on one channel only stops that
 * channel's sender. Unlike the MCP TypeScript SDK's `Protocol` (which keeps one request's state in
 * several maps keyed by id, each cleaned up on its own path), each stream keeps all of its
 * state in one object held in one map, so finishing a stream cannot leave anything behind.
 *
 * The parts: this connection (handshake, the read loop, dispatch, open and accept, the end),
 * its {@linkcode OutQueue} (out_queue.ts), and each {@linkcode MuxStream} (stream.ts) with its
 * channels (channel.ts). A stream reaches the connection only through a `StreamLink`, and the
 * connection reaches a stream only through the inbox `MuxStream.create` hands it.
 *
 * @module
 */

import {
  AGENT_PROTOCOL_VERSION,
  DEFAULT_MAX_DATA,
  DEFAULT_MAX_STREAMS,
  DEFAULT_WINDOW,
  FrameFlag,
  FrameType,
  frameTypeName,
  HELLO_MAGIC,
  MAX_CHANNELS,
  MAX_FRAME_PAYLOAD,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_PAYLOAD_LEN,
} from "./constants.ts";
import { agentErrorFromWire, type AgentErrorPayload, ConnectionError } from "./errors.ts";
import { decodeJson, encodeJson, type Frame, FrameDecoder } from "./frame.ts";
import { OutQueue } from "./out_queue.ts";
import { MuxStream, type StreamInbox, type StreamLink } from "./stream.ts";

/** Any ordered, reliable byte stream (Deno.Conn, Deno.FsFile, a TransformStream pair). */
export interface ByteStream {
  /** Bytes from the peer. */
  readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. */
  writable: WritableStream<Uint8Array>;
}

/** Which end of the connection this is; decides stream id parity (host odd, guest even). */
export type Role = "host" | "guest";

/** The HELLO payload each side sends first. */
export interface Hello {
  /** Always {@link HELLO_MAGIC}. */
  magic: string;
  /** Protocol major version; must equal {@link AGENT_PROTOCOL_VERSION}. */
  protocol: number;
  /** The sender's role. */
  role: Role;
  /** Software version of the sender (agent or CLI), for logs. */
  version: string;
  /** Features the sender supports (op names, e.g. "exec", "watch"). */
  capabilities: string[];
  /** Initial receive window per channel the sender grants (bytes). */
  window: number;
  /** Largest DATA payload the sender accepts. */
  maxFrame: number;
}

/** Options of {@link Mux.connect}. */
export interface MuxOptions {
  /** This end's role. */
  role: Role;
  /** This end's software version, sent in HELLO. */
  version: string;
  /** Capabilities announced in HELLO. @default [] */
  capabilities?: string[];
  /** Receive window per channel, bytes. @default DEFAULT_WINDOW (4 MiB) */
  window?: number;
  /** Largest DATA payload accepted (and sent). @default DEFAULT_MAX_DATA (256 KiB) */
  maxFrame?: number;
  /** Max streams the peer may have open towards us at once. @default 1024 */
  maxStreams?: number;
  /** Aborts the handshake (e.g. `AbortSignal.timeout(5000)`). */
  signal?: AbortSignal;
  /**
   * Waits `ms` (or until `signal` aborts); bounds a shutdown whose peer stopped reading.
   * @default a `setTimeout`-based wait (the guest agent passes its poller's: Deno's first
   * `setTimeout` loads its Node timers, which costs about half a second under TCG emulation)
   */
  sleep?: (ms: number, signal: AbortSignal) => Promise<unknown>;
}

/** {@link MuxOptions.sleep}'s default. */
function timerSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Options of {@link Mux.open}. */
export interface OpenOptions {
  /**
   * Channels this side will read. Bytes the peer sends on any other channel are dropped and
   * credited back at once, so a misbehaving peer cannot pin memory on channels nobody reads.
   * @default all channels
   */
  reads?: number[];
}

/** How long a failing connection tries to deliver its GOAWAY before dropping the transport. */
const SHUTDOWN_TIMEOUT_MS = 2000;

/** Smallest free space a read is given (the decoder compacts or grows to provide it). */
const READ_MIN = 256 * 1024;

/**
 * One connection: frames in, frames out, streams in a map. Create with {@link Mux.connect}.
 */
export class Mux {
  /** The peer's HELLO. */
  readonly peer: Hello;
  /**
   * Resolves when the connection has ended: with `undefined` after a local {@link close}, else
   * with the {@link ConnectionError} that ended it (peer gone, garbage, ...). Never rejects.
   */
  readonly closed: Promise<ConnectionError | undefined>;

  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  /** Byte-stream transports: reads go straight into the decoder's buffer. */
  #byob: ReadableStreamBYOBReader | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #decoder: FrameDecoder;
  #role: Role;
  #window: number;
  #maxFrame: number;
  #maxStreams: number;
  #sendMax: number;
  #streams = new Map<number, { stream: MuxStream; inbox: StreamInbox }>();
  #nextId: number;
  #peerMaxId = 0;
  #peerOpen = 0;
  #acceptQueue: Array<{ stream: MuxStream; inbox: StreamInbox }> = [];
  #acceptWaiters: ((s: MuxStream | undefined) => void)[] = [];
  readonly #out: OutQueue;
  #pings = new Map<bigint, (now: number) => void>();
  #pingSeq = 0n;
  #ended = false;
  #endError: ConnectionError | undefined;
  #resolveClosed!: (err: ConnectionError | undefined) => void;
  #readDone: Promise<void> | undefined;
  #shutdown: Promise<void> | undefined;
  #sleep: (ms: number, signal: AbortSignal) => Promise<unknown>;

  private constructor(
    transport: ByteStream,
    options: MuxOptions,
    window: number,
    maxFrame: number,
  ) {
    // Byte streams (Deno.Conn, Deno.FsFile) take a BYOB reader: large reads into one reused
    // buffer instead of a fresh 64 KiB chunk per read.
    try {
      this.#byob = transport.readable.getReader({ mode: "byob" });
    } catch {
      this.#reader = transport.readable.getReader();
    }
    this.#writer = transport.writable.getWriter();
    this.#out = new OutQueue(this.#writer, { onWriteError: (err) => this.#fail(err) });
    this.#role = options.role;
    this.#window = window;
    this.#maxFrame = maxFrame;
    this.#maxStreams = options.maxStreams ?? DEFAULT_MAX_STREAMS;
    this.#sleep = options.sleep ?? timerSleep;
    this.#sendMax = maxFrame;
    this.#decoder = new FrameDecoder({ maxPayload: maxFrame });
    this.#nextId = options.role === "host" ? 1 : 2;
    this.peer = undefined as unknown as Hello;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /**
   * Sends our HELLO on `transport`, waits for the peer's, and returns the running connection.
   * Throws {@link ConnectionError} `"handshake"` if the peer is not a compatible shuru peer.
   */
  static async connect(transport: ByteStream, options: MuxOptions): Promise<Mux> {
    const window = options.window ?? DEFAULT_WINDOW;
    const maxFrame = options.maxFrame ?? DEFAULT_MAX_DATA;
    if (!Number.isInteger(window) || window < 1024 || window > MAX_WINDOW) {
      throw new RangeError(`Cannot use window ${window}: must be 1024..${MAX_WINDOW}`);
    }
    if (!Number.isInteger(maxFrame) || maxFrame < 1024 || maxFrame > MAX_FRAME_PAYLOAD) {
      throw new RangeError(`Cannot use maxFrame ${maxFrame}: must be 1024..${MAX_FRAME_PAYLOAD}`);
    }
    const mux = new Mux(transport, options, window, maxFrame);
    const hello: Hello = {
      magic: HELLO_MAGIC,
      protocol: AGENT_PROTOCOL_VERSION,
      role: options.role,
      version: options.version,
      capabilities: options.capabilities ?? [],
      window,
      maxFrame,
    };
    mux.#sendFrame(FrameType.HELLO, 0, 0, 0, encodeJson(hello));
    const onAbort = () =>
      mux.#fail(
        new ConnectionError("handshake", "Cannot connect to agent: no HELLO before the deadline", {
          cause: options.signal?.reason,
        }),
      );
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (options.signal?.aborted) onAbort();
      const peer = await mux.#readHello();
      (mux as { peer: Hello }).peer = peer;
      mux.#sendMax = Math.min(maxFrame, peer.maxFrame);
    } catch (err) {
      mux.#fail(err);
      // Let the GOAWAY reach the peer before the caller closes the transport.
      await mux.#shutdown;
      throw mux.#endError ?? err;
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
    }
    mux.#readDone = mux.#readLoop();
    return mux;
  }

  /** This end's role. */
  get role(): Role {
    return this.#role;
  }

  /** Number of streams currently open (both directions). */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** Bytes queued for the transport but not yet written. */
  get queuedBytes(): number {
    return this.#out.bytes;
  }

  /**
   * Opens a stream with a JSON request header. Frames are queued at once; errors surface on the
   * stream (`result`, channel reads/writes).
   */
  open(request: Record<string, unknown>, options: OpenOptions = {}): MuxStream {
    if (this.#ended) {
      throw this.#endError ??
        new ConnectionError("closed", "Cannot open stream: connection is closed");
    }
    const id = this.#nextId;
    if (id > MAX_STREAM_ID) {
      throw new ConnectionError("limit", "Cannot open stream: stream ids exhausted");
    }
    const payload = encodeJson(request);
    this.#nextId += 2;
    const entry = MuxStream.create(this.#link, {
      id,
      request,
      initiator: true,
      recvWindow: this.#window,
      sendWindow: this.#peerWindow(),
    });
    const stream = entry.stream;
    this.#streams.set(id, entry);
    if (options.reads) {
      for (let i = 0; i < MAX_CHANNELS; i++) {
        if (!options.reads.includes(i)) stream.channel(i).discard();
      }
    }
    this.#sendFrame(FrameType.OPEN, 0, 0, id, payload);
    return stream;
  }

  /** Waits for the next stream the peer opens; `undefined` once the connection has ended. */
  accept(): Promise<MuxStream | undefined> {
    const s = this.#acceptQueue.shift();
    if (s) return Promise.resolve(s.stream);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#acceptWaiters.push(resolve));
  }

  /** Iterates over the streams the peer opens until the connection ends. */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<MuxStream> {
    while (true) {
      const s = await this.accept();
      if (!s) return;
      yield s;
    }
  }

  /** Measures a round trip (PING → PING ACK) in milliseconds. */
  ping(): Promise<number> {
    if (this.#ended) {
      return Promise.reject(
        this.#endError ?? new ConnectionError("closed", "Cannot ping: connection is closed"),
      );
    }
    const seq = ++this.#pingSeq;
    const payload = new Uint8Array(PING_PAYLOAD_LEN);
    new DataView(payload.buffer).setBigUint64(0, seq);
    const start = performance.now();
    return new Promise((resolve, reject) => {
      this.#pings.set(seq, (now) => now < 0 ? reject(this.#endError) : resolve(now - start));
      this.#sendFrame(FrameType.PING, 0, 0, 0, payload);
    });
  }

  /**
   * Ends the connection: sends GOAWAY, flushes, closes the transport. Open streams fail with
   * {@link ConnectionError} `"closed"`.
   */
  async close(): Promise<void> {
    if (this.#ended) {
      await this.#shutdown;
      return;
    }
    try {
      this.#sendFrame(
        FrameType.GOAWAY,
        0,
        0,
        0,
        encodeJson({ code: "cancelled", message: "connection closed by peer" }),
      );
    } catch {
      // The transport is already gone; nothing to flush.
    }
    // Queued frames (GOAWAY last) are written by the shutdown, bounded by SHUTDOWN_TIMEOUT_MS.
    this.#end(undefined);
    await this.#readDone;
    await this.#shutdown;
  }

  /**
   * The host's end of a detach: opens a stream with `request` as the last frame this side ever
   * writes (later frames, credit included, are dropped), waits for its result, then ends the
   * connection locally (no GOAWAY) and closes the transport. Open streams fail with
   * {@link ConnectionError} `"detached"`.
   */
  async detach(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    const stream = this.open(request, { reads: [] });
    this.#out.seal();
    try {
      return await stream.result;
    } finally {
      this.#end(new ConnectionError("detached", "Agent connection detached (session kept)"));
      await this.#readDone;
      await this.#shutdown;
    }
  }

  /**
   * The agent's end of a detach: `stream`'s CLOSE with `result` is the last frame written; no
   * GOAWAY, no RESET for the other streams (they end here only, with {@link ConnectionError}
   * `"detached"`). Everything up to the end of the connection happens before the first await,
   * so no other frame can slip in after the CLOSE; stop the transport's reads before calling
   * it. Resolves once written.
   */
  async closeAfter(stream: MuxStream, result: Record<string, unknown>): Promise<void> {
    if (this.#ended) return;
    void stream.close(result).catch(() => {});
    this.#out.seal();
    this.#end(new ConnectionError("detached", "Agent connection detached by the host"));
    await this.#shutdown;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ------------------------------------------------------------------ what streams may use

  /** The streams' view of this connection. */
  readonly #link: StreamLink = {
    send: (type, flags, channel, stream, payload) => {
      this.#sendFrame(type, flags, channel, stream, payload);
      return this.#out.full ? this.#out.drained() : Promise.resolve();
    },
    maxPayload: () => this.#sendMax,
    endError: () =>
      this.#ended
        ? this.#endError ?? new ConnectionError("closed", "Cannot use stream: connection is closed")
        : undefined,
    forget: (stream) => {
      if (this.#streams.get(stream.id)?.stream === stream) {
        this.#streams.delete(stream.id);
        if (!stream.initiator) this.#peerOpen--;
      }
    },
  };

  // ----------------------------------------------------------------------------- frame output

  #peerWindow(): number {
    return this.peer?.window ?? DEFAULT_WINDOW;
  }

  /** Queues a frame; a queue over its hard cap (the peer stopped reading) ends the connection. */
  #sendFrame(
    type: FrameType,
    flags: number,
    channel: number,
    stream: number,
    payload: Uint8Array,
  ): void {
    try {
      this.#out.push(type, flags, channel, stream, payload);
    } catch (err) {
      if (err instanceof ConnectionError && err.code === "limit") this.#fail(err);
      throw err;
    }
  }

  // ------------------------------------------------------------------------------ frame input

  async #nextFrame(): Promise<Frame | undefined> {
    while (true) {
      const frame = this.#decoder.next();
      if (frame) return frame;
      // Every frame from earlier reads was dispatched (DATA copied out), so the decoder may
      // reuse its buffer for this read.
      if (this.#byob) {
        const { value, done } = await this.#byob.read(this.#decoder.space(READ_MIN));
        // BYOB transfers the buffer; the decoder continues with the returned one.
        if (value) this.#decoder.adopt(value);
        if (done) {
          this.#decoder.finish();
          return undefined;
        }
        this.#decoder.commit(value.length);
      } else {
        const { value, done } = await this.#reader!.read();
        if (done) {
          this.#decoder.finish();
          return undefined;
        }
        this.#decoder.push(value);
      }
    }
  }

  async #readHello(): Promise<Hello> {
    const frame = await this.#nextFrame();
    if (this.#ended) throw this.#endError;
    if (!frame) {
      throw new ConnectionError(
        "handshake",
        "Cannot connect to agent: connection closed before HELLO",
      );
    }
    if (frame.type !== FrameType.HELLO) {
      throw new ConnectionError(
        "handshake",
        `Cannot connect to agent: expected HELLO, got ${frameTypeName(frame.type)}`,
      );
    }
    return this.#parseHello(decodeJson(frame.payload, frame.type));
  }

  #parseHello(v: Record<string, unknown>): Hello {
    const fail = (what: string) =>
      new ConnectionError("handshake", `Cannot connect to agent: ${what}`);
    if (v.magic !== HELLO_MAGIC) throw fail(`HELLO magic is not "${HELLO_MAGIC}"`);
    if (v.protocol !== AGENT_PROTOCOL_VERSION) {
      throw fail(
        `peer speaks protocol ${JSON.stringify(v.protocol)}, we speak ${AGENT_PROTOCOL_VERSION}` +
          " (update the agent or the CLI so they match)",
      );
    }
    const expected: Role = this.#role === "host" ? "guest" : "host";
    if (v.role !== expected) {
      throw fail(`peer role is ${JSON.stringify(v.role)}, expected ${expected}`);
    }
    if (typeof v.version !== "string" || v.version.length > 128) throw fail("bad version");
    if (
      !Array.isArray(v.capabilities) || v.capabilities.length > 256 ||
      !v.capabilities.every((c) => typeof c === "string" && c.length <= 64)
    ) throw fail("bad capabilities");
    const window = v.window;
    if (
      typeof window !== "number" || !Number.isInteger(window) || window < 1024 ||
      window > MAX_WINDOW
    ) {
      throw fail(`bad window ${JSON.stringify(window)}`);
    }
    const maxFrame = v.maxFrame;
    if (
      typeof maxFrame !== "number" || !Number.isInteger(maxFrame) || maxFrame < 1024 ||
      maxFrame > MAX_FRAME_PAYLOAD
    ) throw fail(`bad maxFrame ${JSON.stringify(maxFrame)}`);
    return {
      magic: v.magic,
      protocol: v.protocol,
      role: expected,
      version: v.version,
      capabilities: v.capabilities as string[],
      window,
      maxFrame,
    };
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#ended) {
        const frame = await this.#nextFrame();
        if (!frame) {
          if (!this.#ended) {
            this.#fail(new ConnectionError("closed", "Agent connection closed by the peer"));
          }
          return;
        }
        this.#dispatch(frame);
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  #isKnownClosed(id: number): boolean {
    const mine = (id % 2 === 1) === (this.#role === "host");
    return mine ? id < this.#nextId : id <= this.#peerMaxId;
  }

  #dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.HELLO:
        throw new ConnectionError("malformed", "Cannot decode frame: duplicate HELLO");
      case FrameType.PING: {
        const seq = new DataView(frame.payload.buffer, frame.payload.byteOffset, 8).getBigUint64(0);
        if (frame.flags & FrameFlag.ACK) {
          const done = this.#pings.get(seq);
          this.#pings.delete(seq);
          done?.(performance.now());
        } else {
          this.#sendFrame(FrameType.PING, FrameFlag.ACK, 0, 0, frame.payload.slice());
        }
        return;
      }
      case FrameType.GOAWAY: {
        const w = agentErrorFromWire(decodeJson(frame.payload, frame.type));
        throw new ConnectionError(
          w.code === "cancelled" ? "closed" : "goaway",
          `Agent connection closed by the peer: ${w.message}`,
        );
      }
      case FrameType.OPEN: {
        const id = frame.stream;
        const peerParity = this.#role === "host" ? 0 : 1;
        if (id % 2 !== peerParity || id <= this.#peerMaxId) {
          throw new ConnectionError(
            "malformed",
            `Cannot decode frame: OPEN with stream id ${id} (must be new and ${
              peerParity ? "odd" : "even"
            })`,
          );
        }
        this.#peerMaxId = id;
        const request = decodeJson(frame.payload, frame.type);
        if (this.#peerOpen >= this.#maxStreams) {
          this.#sendFrame(
            FrameType.RESET,
            0,
            0,
            id,
            encodeJson({
              code: "busy",
              message: `Cannot open stream: ${this.#maxStreams} streams already open`,
            }),
          );
          return;
        }
        const entry = MuxStream.create(this.#link, {
          id,
          request,
          initiator: false,
          recvWindow: this.#window,
          sendWindow: this.peer.window,
        });
        this.#streams.set(id, entry);
        this.#peerOpen++;
        const waiter = this.#acceptWaiters.shift();
        if (waiter) waiter(entry.stream);
        else this.#acceptQueue.push(entry);
        return;
      }
      default: {
        const entry = this.#streams.get(frame.stream);
        if (!entry) {
          if (this.#isKnownClosed(frame.stream)) return; // in flight when the stream finished
          throw new ConnectionError(
            "malformed",
            `Cannot decode frame: ${frameTypeName(frame.type)} for unknown stream ${frame.stream}`,
          );
        }
        entry.inbox.receive(frame);
      }
    }
  }

  // ----------------------------------------------------------------------------------- ending

  #fail(err: unknown): void {
    if (this.#ended) return;
    const error = err instanceof ConnectionError ? err : new ConnectionError(
      "transport",
      `Cannot read from agent connection: ${err instanceof Error ? err.message : err}`,
      { cause: err },
    );
    // Tell the peer why, best effort, so its log names the problem.
    if (error.code !== "closed" && error.code !== "transport" && error.code !== "goaway") {
      try {
        const wire: AgentErrorPayload = { code: "protocol", message: error.message };
        // Queued data belongs to streams that are failing now; only the GOAWAY matters.
        this.#out.replaceWithFrame(FrameType.GOAWAY, encodeJson(wire));
      } catch {
        // Cannot even encode: skip the courtesy.
      }
    }
    this.#end(error);
  }

  #end(error: ConnectionError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endError = error;
    const streamError = error ??
      new ConnectionError("closed", "Cannot use stream: connection is closed");
    for (const entry of [...this.#streams.values()]) entry.inbox.end(streamError);
    this.#streams.clear();
    for (const entry of this.#acceptQueue) entry.inbox.end(streamError);
    this.#acceptQueue = [];
    for (const w of this.#acceptWaiters) w(undefined);
    this.#acceptWaiters = [];
    for (const done of this.#pings.values()) done(-1);
    this.#pings.clear();
    this.#out.end(error, streamError);
    // `closed` resolves only once the GOAWAY is written, so a caller that closes the transport
    // right after cannot cut it off.
    this.#shutdown = this.#shutdownTransport().then(() => this.#resolveClosed(error));
  }

  async #shutdownTransport(): Promise<void> {
    // Write what is queued (GOAWAY last), then close both directions. A peer that stopped
    // reading must not hold us forever: give up after SHUTDOWN_TIMEOUT_MS.
    const stopTimer = new AbortController();
    const timeout = this.#sleep(SHUTDOWN_TIMEOUT_MS, stopTimer.signal).then(() =>
      "timeout" as const
    );
    const flushed = this.#out.flushAndClose().then(() => "flushed" as const).catch(() =>
      "failed" as const
    );
    const outcome = await Promise.race([flushed, timeout]);
    stopTimer.abort();
    // Cancelling the reader also closes a Deno.Conn / Deno.FsFile, which fails a write stuck
    // on a peer that does not read; then the writer can be aborted.
    try {
      await (this.#byob ?? this.#reader)!.cancel();
    } catch {
      // Already closed.
    }
    if (outcome !== "flushed") {
      // Not awaited: abort() waits for an in-flight write, which may never settle.
      this.#writer.abort().catch(() => {});
    }
  }
}
