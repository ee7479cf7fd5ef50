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
 * {@link OUT_HIGH_WATER} (writers wait), and a stalled reader on one channel only stops that
 * channel's sender. Unlike MCP's `Protocol` (see docs/STYLE), each stream keeps all of its state
 * in one object held in one map, so finishing a stream cannot leave anything behind.
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
  HEADER_LEN,
  HELLO_MAGIC,
  MAX_CHANNELS,
  MAX_FRAME_PAYLOAD,
  MAX_QUEUED_MESSAGES,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_PAYLOAD_LEN,
} from "./constants.ts";
import {
  AgentError,
  agentErrorFromWire,
  type AgentErrorPayload,
  ConnectionError,
  toWireError,
} from "./errors.ts";
import {
  decodeJson,
  encodeJson,
  type Frame,
  FrameDecoder,
  windowIncrement,
  windowPayload,
  writeHeader,
} from "./frame.ts";

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

/** Bytes queued for the transport above which writers wait. */
export const OUT_HIGH_WATER = 1024 * 1024;

/** Bytes queued for the transport above which the connection is dropped (peer not reading). */
const OUT_HARD_LIMIT = 16 * 1024 * 1024;

/** Queued pieces (headers and payloads) above which writers wait. */
const OUT_HIGH_PIECES = 8192;

/** Queued pieces above which the connection is dropped (tiny frames cost more than their bytes). */
const OUT_HARD_PIECES = 65536;

/** How long a failing connection tries to deliver its GOAWAY before dropping the transport. */
const SHUTDOWN_TIMEOUT_MS = 2000;

/** Largest single write the output loop builds by coalescing queued frames. */
const COALESCE_LIMIT = 1024 * 1024;

/** Smallest free space a read is given (the decoder compacts or grows to provide it). */
const READ_MIN = 256 * 1024;

const EMPTY = new Uint8Array(0);

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

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
  #streams = new Map<number, MuxStream>();
  #nextId: number;
  #peerMaxId = 0;
  #peerOpen = 0;
  #acceptQueue: MuxStream[] = [];
  #acceptWaiters: ((s: MuxStream | undefined) => void)[] = [];
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #outPieces = 0;
  #flushing = false;
  #batch: Uint8Array | undefined;
  #drainWaiters: Waiter[] = [];
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
    return this.#outBytes;
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
    const stream = new MuxStream(this, id, request, true, this.#window, this.#peerWindow());
    this.#streams.set(id, stream);
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
    if (s) return Promise.resolve(s);
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

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ------------------------------------------------------------------ internal: used by streams

  /** @internal Queues a frame; returns a promise that waits while the out queue is full. */
  sendFrameInternal(
    type: FrameType,
    flags: number,
    channel: number,
    stream: number,
    payload: Uint8Array,
  ): Promise<void> {
    this.#sendFrame(type, flags, channel, stream, payload);
    return this.#outFull() ? this.#drained() : Promise.resolve();
  }

  /** @internal Largest DATA payload to send. */
  get sendMaxInternal(): number {
    return this.#sendMax;
  }

  /** @internal Removes a finished stream. */
  forgetInternal(stream: MuxStream): void {
    if (this.#streams.get(stream.id) === stream) {
      this.#streams.delete(stream.id);
      if (!stream.initiator) this.#peerOpen--;
    }
  }

  /** @internal The error that ended the connection, if it ended. */
  get endErrorInternal(): ConnectionError | undefined {
    return this.#ended
      ? this.#endError ?? new ConnectionError("closed", "Cannot use stream: connection is closed")
      : undefined;
  }

  // ----------------------------------------------------------------------------- frame output

  #peerWindow(): number {
    return this.peer?.window ?? DEFAULT_WINDOW;
  }

  #sendFrame(
    type: FrameType,
    flags: number,
    channel: number,
    stream: number,
    payload: Uint8Array,
  ): void {
    if (this.#ended) {
      throw this.#endError ?? new ConnectionError("closed", "Cannot send: connection is closed");
    }
    if (this.#outBytes > OUT_HARD_LIMIT || this.#outPieces > OUT_HARD_PIECES) {
      // Writers wait at OUT_HIGH_WATER; only replies we owe the peer (PING ACKs, RESETs for
      // refused OPENs) can pile up here, and only if the peer floods us while not reading.
      const err = new ConnectionError(
        "limit",
        `Cannot send to peer: ${this.#outPieces} frames (${this.#outBytes} bytes) queued, ` +
          "the peer is not reading",
      );
      this.#fail(err);
      throw err;
    }
    const header = new Uint8Array(HEADER_LEN);
    writeHeader(header, 0, { type, flags, channel, stream, length: payload.length });
    this.#out.push(header);
    this.#outBytes += HEADER_LEN;
    this.#outPieces++;
    if (payload.length > 0) {
      this.#out.push(payload);
      this.#outBytes += payload.length;
      this.#outPieces++;
    }
    if (!this.#flushing) void this.#flush();
  }

  /**
   * Takes the next write: queued frames copied into one reused batch buffer (a write completes
   * before the next batch is built, so reuse is safe); a piece larger than the batch goes alone.
   */
  #takeBatch(): Uint8Array {
    const first = this.#out[0]!;
    if (this.#out.length === 1 || first.length >= COALESCE_LIMIT) {
      this.#out.shift();
      this.#outPieces--;
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
    this.#outPieces -= count;
    return batch.subarray(0, offset);
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#out.length > 0 && !this.#ended) {
        const batch = this.#takeBatch();
        await this.#writer.write(batch);
        this.#outBytes -= batch.length;
        if (!this.#outFull()) this.#wakeDrainers();
      }
    } catch (err) {
      this.#fail(
        new ConnectionError("transport", `Cannot write to agent connection: ${err}`, {
          cause: err,
        }),
      );
    } finally {
      this.#flushing = false;
    }
  }

  /** Writers wait while this holds (bytes, or many tiny frames, waiting for the transport). */
  #outFull(): boolean {
    return this.#outBytes > OUT_HIGH_WATER || this.#outPieces > OUT_HIGH_PIECES;
  }

  #wakeDrainers(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w.resolve();
  }

  /** Resolves when the out queue is at or below the high-water mark (empty for close). */
  #drained(): Promise<void> {
    if (this.#ended) {
      return Promise.reject(
        this.#endError ?? new ConnectionError("closed", "Cannot send: connection is closed"),
      );
    }
    if (this.#outBytes === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
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
        const stream = new MuxStream(this, id, request, false, this.#window, this.peer.window);
        this.#streams.set(id, stream);
        this.#peerOpen++;
        const waiter = this.#acceptWaiters.shift();
        if (waiter) waiter(stream);
        else this.#acceptQueue.push(stream);
        return;
      }
      default: {
        const stream = this.#streams.get(frame.stream);
        if (!stream) {
          if (this.#isKnownClosed(frame.stream)) return; // in flight when the stream finished
          throw new ConnectionError(
            "malformed",
            `Cannot decode frame: ${frameTypeName(frame.type)} for unknown stream ${frame.stream}`,
          );
        }
        stream.receiveInternal(frame);
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
        const header = new Uint8Array(HEADER_LEN);
        const payload = encodeJson(wire);
        writeHeader(header, 0, {
          type: FrameType.GOAWAY,
          flags: 0,
          channel: 0,
          stream: 0,
          length: payload.length,
        });
        // Queued data belongs to streams that are failing now; only the GOAWAY matters.
        this.#out = [header, payload];
        this.#outBytes = header.length + payload.length;
        this.#outPieces = 2;
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
    for (const stream of [...this.#streams.values()]) stream.finishInternal(streamError);
    this.#streams.clear();
    for (const s of this.#acceptQueue) s.finishInternal(streamError);
    this.#acceptQueue = [];
    for (const w of this.#acceptWaiters) w(undefined);
    this.#acceptWaiters = [];
    for (const done of this.#pings.values()) done(-1);
    this.#pings.clear();
    for (const w of this.#drainWaiters) w.reject(streamError);
    this.#drainWaiters = [];
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
    const flushed = (async () => {
      // The running flush stops at #ended; `ready` waits for its write to settle.
      if (this.#flushing) await this.#writer.ready;
      while (this.#out.length > 0) await this.#writer.write(this.#takeBatch());
      this.#outBytes = 0;
      this.#outPieces = 0;
      await this.#writer.close();
      return "flushed" as const;
    })().catch(() => "failed" as const);
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

/** One direction-pair of bytes within a stream, with its own flow control. */
export class MuxChannel {
  /** The stream this channel belongs to. */
  readonly stream: MuxStream;
  /** Channel number (0..3). */
  readonly index: number;

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

  /** @internal */
  constructor(stream: MuxStream, index: number, recvWindow: number, sendWindow: number) {
    this.stream = stream;
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
        this.stream.reset(
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
    const max = this.stream.muxInternal.sendMaxInternal;
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
      await this.stream.muxInternal.sendFrameInternal(
        FrameType.DATA,
        0,
        this.index,
        this.stream.id,
        piece,
      );
    }
  }

  /** Sends FIN: no more bytes from us on this channel. Idempotent. */
  async closeWrite(): Promise<void> {
    if (this.#sentFin) return;
    if (this.#sendError) throw this.#sendError;
    this.#sentFin = true;
    await this.stream.muxInternal.sendFrameInternal(
      FrameType.DATA,
      FrameFlag.FIN,
      this.index,
      this.stream.id,
      EMPTY,
    );
  }

  // ----------------------------------------------------------------------- internal receiving

  /** @internal */
  receiveData(payload: Uint8Array, fin: boolean): void {
    if (this.#recvEnded) {
      throw new ConnectionError(
        "malformed",
        `Cannot decode frame: DATA on stream ${this.stream.id} channel ${this.index} after FIN`,
      );
    }
    if (payload.length > this.#recvWindow) {
      throw new ConnectionError(
        "flow_control",
        `Cannot accept DATA on stream ${this.stream.id} channel ${this.index}: ` +
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

  /** @internal */
  receiveWindow(increment: number): void {
    if (increment === 0 || this.#credit + increment > MAX_WINDOW) {
      throw new ConnectionError(
        "flow_control",
        `Cannot accept WINDOW on stream ${this.stream.id} channel ${this.index}: ` +
          `increment ${increment} on credit ${this.#credit}`,
      );
    }
    this.#credit += increment;
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w.resolve();
  }

  /** @internal The stream finished: `error` undefined = clean CLOSE (EOF after queued data). */
  finish(error: Error | undefined, sendError: Error): void {
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
    if (this.#consumed >= this.#recvGrant / 4 && !this.stream.finished) {
      const inc = this.#consumed;
      this.#consumed = 0;
      this.#recvWindow += inc;
      void this.stream.muxInternal.sendFrameInternal(
        FrameType.WINDOW,
        0,
        this.index,
        this.stream.id,
        windowPayload(inc),
      ).catch(() => {});
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

  #mux: Mux;
  #channels: (MuxChannel | undefined)[] = [];
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

  /** @internal */
  constructor(
    mux: Mux,
    id: number,
    request: Record<string, unknown>,
    initiator: boolean,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.#mux = mux;
    this.id = id;
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

  /** @internal */
  get muxInternal(): Mux {
    return this.#mux;
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
      ch = new MuxChannel(this, index, this.#recvWindow, this.#sendWindow);
      this.#channels[index] = ch;
      if (this.#finished) ch.finish(this.#recvError, this.#sendError ?? closedError(this.id));
    }
    return ch;
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
    if (this.#finished) return Promise.reject(this.#mux.endErrorInternal ?? closedError(this.id));
    return this.#mux.sendFrameInternal(FrameType.MESSAGE, 0, 0, this.id, encodeJson(message));
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
    await this.#mux.sendFrameInternal(FrameType.CLOSE, 0, 0, this.id, payload);
  }

  /** Aborts the stream from this side, telling the peer why. Idempotent. */
  reset(error: AgentErrorPayload | AgentError): void {
    if (this.#finished) return;
    const wire = error instanceof AgentError ? error.toWire() : error;
    const err = agentErrorFromWire(wire);
    this.#finishLocal(err, err);
    try {
      void this.#mux.sendFrameInternal(FrameType.RESET, 0, 0, this.id, encodeJson(wire)).catch(
        () => {},
      );
    } catch {
      // Connection already gone: the peer forgets the stream anyway.
    }
  }

  // ------------------------------------------------------------------------------ internal

  /** @internal Handles a frame addressed to this stream. */
  receiveInternal(frame: Frame): void {
    switch (frame.type) {
      case FrameType.DATA:
        this.channel(frame.channel).receiveData(frame.payload, (frame.flags & FrameFlag.FIN) !== 0);
        return;
      case FrameType.WINDOW:
        this.channel(frame.channel).receiveWindow(windowIncrement(frame.payload));
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

  /** @internal The connection ended. */
  finishInternal(error: Error): void {
    this.#finishLocal(error, error);
  }

  #finishLocal(recvError: Error | undefined, sendError: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#recvError = recvError;
    this.#sendError = sendError;
    this.#mux.forgetInternal(this);
    for (const ch of this.#channels) ch?.finish(recvError, sendError);
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
