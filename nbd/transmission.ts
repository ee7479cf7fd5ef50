/**
 * The transmission phase: decode requests, validate each in one place
 * ({@linkcode validateRequest}), dispatch to the {@linkcode BlockBackend}, and write replies.
 *
 * Requests run concurrently and replies go out in completion order (the protocol allows any
 * order; clients match them by cookie). A per-connection budget bounds requests in flight and
 * their payload bytes; when it is exhausted we stop reading the socket, which is the
 * backpressure a client sees. The budget is returned only once a reply has been written, so a
 * client that never reads its replies cannot make us buffer without limit.
 *
 * Two classes of failure, as in nbdkit: a bad request (out of range, zero length, unknown
 * command or flag, write to a read-only export) gets an NBD error reply and the connection keeps
 * serving; a framing violation (bad request magic, stream ending mid-message) ends the
 * connection. A rejected WRITE's payload is still read and discarded so the stream stays in
 * sync.
 *
 * @module
 */

import type { BlockBackend, Extent } from "./backend.ts";
import { type BufferedReader, type ByteSink, writeAll } from "./_io.ts";
import { errorValue, nbdErrorOf, NbdProtocolError } from "./errors.ts";
import {
  AllocationState,
  Command,
  CommandFlag,
  commandName,
  type ErrorName,
  flagNames,
  Limit,
  Magic,
  ReplyFlag,
  ReplyType,
  RequestField,
  Size,
  TransmissionFlag,
} from "./wire.ts";

/** Log sink: level plus a message that names every protocol value. */
export type NbdLogger = (level: "debug" | "info" | "warn" | "error", message: string) => void;

/** One decoded request header. */
export interface Request {
  /** Command flags. */
  flags: number;
  /** Command (see `Command` in wire.ts). */
  type: number;
  /** The client's 8-byte cookie (a copy), echoed in the reply. */
  cookie: Uint8Array;
  /** Byte offset; values above 2^53 are approximated, which only matters for range checks. */
  offset: number;
  /** Byte length. */
  length: number;
}

/** Decodes a 28-byte request header. Returns `null` when the magic is wrong. */
export function decodeRequest(header: Uint8Array): Request | null {
  const v = new DataView(header.buffer, header.byteOffset, Size.REQUEST_HEADER);
  if (v.getUint32(RequestField.MAGIC) !== Magic.REQUEST) return null;
  return {
    flags: v.getUint16(RequestField.FLAGS),
    type: v.getUint16(RequestField.TYPE),
    cookie: header.slice(RequestField.COOKIE, RequestField.COOKIE + 8),
    offset: v.getUint32(RequestField.OFFSET) * 2 ** 32 + v.getUint32(RequestField.OFFSET + 4),
    length: v.getUint32(RequestField.LENGTH),
  };
}

/** Encodes a request header (used by tests and the hostile client). */
export function encodeRequest(req: Request): Uint8Array {
  const b = new Uint8Array(Size.REQUEST_HEADER);
  const v = new DataView(b.buffer);
  v.setUint32(RequestField.MAGIC, Magic.REQUEST);
  v.setUint16(RequestField.FLAGS, req.flags);
  v.setUint16(RequestField.TYPE, req.type);
  b.set(req.cookie.subarray(0, 8), RequestField.COOKIE);
  v.setBigUint64(RequestField.OFFSET, BigInt(req.offset));
  v.setUint32(RequestField.LENGTH, req.length);
  return b;
}

/** What a request is checked against: the negotiated state of the connection. */
export interface RequestContext {
  /** Export size in bytes. */
  size: number;
  /** Transmission flags sent to the client. */
  flags: number;
  /** Structured replies negotiated. */
  structuredReplies: boolean;
  /** `base:allocation` selected. */
  baseAllocation: boolean;
}

/** A request the server refuses: the NBD error and a message for the log and the client. */
export interface RequestRejection {
  /** NBD error value name. */
  error: ErrorName;
  /** "Cannot <action>: <state>". */
  message: string;
}

/** Flags each command accepts (FUA is added for every command when SEND_FUA is advertised). */
const ALLOWED_FLAGS: Record<number, number> = {
  [Command.READ]: CommandFlag.DF,
  [Command.WRITE]: 0,
  [Command.FLUSH]: 0,
  [Command.TRIM]: 0,
  [Command.WRITE_ZEROES]: CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.REQ_ONE,
};

/** Flags that are valid only when the matching transmission flag was advertised. */
const FLAG_NEEDS: [number, number][] = [
  [CommandFlag.FUA, TransmissionFlag.SEND_FUA],
  [CommandFlag.DF, TransmissionFlag.SEND_DF],
  [CommandFlag.FAST_ZERO, TransmissionFlag.SEND_FAST_ZERO],
];

/**
 * Every check of a request against the negotiated state, in one place (nbdkit's
 * `validate_request`). Returns `null` when the request may be dispatched. Not called for
 * NBD_CMD_DISC, which is never refused.
 */
export function validateRequest(req: Request, ctx: RequestContext): RequestRejection | null {
  const name = commandName(req.type);
  const allowed = ALLOWED_FLAGS[req.type];
  if (allowed === undefined) {
    return { error: "EINVAL", message: `Cannot run ${name}: unknown or unsupported command` };
  }
  const writes = req.type === Command.WRITE || req.type === Command.TRIM ||
    req.type === Command.WRITE_ZEROES;
  if (writes && (ctx.flags & TransmissionFlag.READ_ONLY) !== 0) {
    return { error: "EPERM", message: `Cannot run ${name}: the export is read-only` };
  }
  let mask = allowed | CommandFlag.FUA;
  for (const [flag, needs] of FLAG_NEEDS) {
    if ((ctx.flags & needs) === 0) mask &= ~flag;
  }
  if ((req.flags & ~mask) !== 0) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: flags ${
        flagNames(CommandFlag, req.flags & ~mask).join("|")
      } are not valid here`,
    };
  }
  if (req.type === Command.FLUSH) {
    if (req.offset !== 0 || req.length !== 0) {
      return { error: "EINVAL", message: `Cannot run ${name}: offset and length must be 0` };
    }
    return null;
  }
  if (req.type === Command.BLOCK_STATUS && !(ctx.structuredReplies && ctx.baseAllocation)) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: no metadata context was negotiated`,
    };
  }
  if (req.length === 0) {
    return { error: "EINVAL", message: `Cannot run ${name}: length is 0` };
  }
  if (req.offset > ctx.size || req.length > ctx.size - req.offset) {
    return {
      error: req.type === Command.WRITE || req.type === Command.WRITE_ZEROES ? "ENOSPC" : "EINVAL",
      message: `Cannot run ${name}: offset ${req.offset} + length ${req.length} is beyond ` +
        `the end of the export (${ctx.size} bytes)`,
    };
  }
  if ((req.type === Command.READ || req.type === Command.WRITE) && req.length > Limit.MAX_PAYLOAD) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: length ${req.length} exceeds the maximum ${Limit.MAX_PAYLOAD}`,
    };
  }
  return null;
}

const encoder = new TextEncoder();

/** Encodes a simple reply header. */
export function encodeSimpleReply(cookie: Uint8Array, error: number): Uint8Array {
  const b = new Uint8Array(Size.SIMPLE_REPLY_HEADER);
  const v = new DataView(b.buffer);
  v.setUint32(0, Magic.SIMPLE_REPLY);
  v.setUint32(4, error);
  b.set(cookie, 8);
  return b;
}

/** Encodes a structured reply chunk header, leaving `extra` bytes of room after it. */
export function encodeStructuredHeader(
  cookie: Uint8Array,
  chunk: { flags: number; type: number; length: number },
  extra = 0,
): Uint8Array {
  const b = new Uint8Array(Size.STRUCTURED_REPLY_HEADER + extra);
  const v = new DataView(b.buffer);
  v.setUint32(0, Magic.STRUCTURED_REPLY);
  v.setUint16(4, chunk.flags);
  v.setUint16(6, chunk.type);
  b.set(cookie, 8);
  v.setUint32(16, chunk.length);
  return b;
}

/** Encodes an NBD_REPLY_TYPE_ERROR chunk (with DONE) carrying `message`. */
export function encodeStructuredError(
  cookie: Uint8Array,
  error: number,
  message: string,
): Uint8Array {
  let msg = encoder.encode(message);
  if (msg.length > Limit.MAX_STRING) msg = msg.subarray(0, Limit.MAX_STRING);
  const b = encodeStructuredHeader(cookie, {
    flags: ReplyFlag.DONE,
    type: ReplyType.ERROR,
    length: 6 + msg.length,
  }, 6 + msg.length);
  const v = new DataView(b.buffer);
  v.setUint32(Size.STRUCTURED_REPLY_HEADER, error);
  v.setUint16(Size.STRUCTURED_REPLY_HEADER + 4, msg.length);
  b.set(msg, Size.STRUCTURED_REPLY_HEADER + 6);
  return b;
}

/** Folds backend extents into at most `max` (length, flags) descriptors covering ≤ `length`. */
export function extentsToDescriptors(
  extents: readonly Extent[],
  length: number,
  max: number,
): [number, number][] {
  const out: [number, number][] = [];
  let pos = 0;
  for (const e of extents) {
    if (!(e.length > 0) || !Number.isSafeInteger(e.length)) break;
    const len = Math.min(e.length, length - pos);
    if (len <= 0) break;
    const flags = (e.hole ? AllocationState.HOLE : 0) | (e.zero ? AllocationState.ZERO : 0);
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === flags) {
      last[0] += len;
    } else {
      if (out.length === max) break;
      out.push([len, flags]);
    }
    pos += len;
  }
  // A backend that describes nothing gets the always-safe answer: status 0 for the whole range.
  if (out.length === 0) out.push([length, 0]);
  return out;
}

/** Largest payload coalesced into a neighbour write; larger ones are written on their own. */
const COALESCE_LIMIT = 64 * 1024;
const COALESCE_BUFFER = 256 * 1024;

/**
 * Serializes replies onto the socket. Small messages queued together are copied into one
 * buffer and written with one syscall; large payloads are written as they are.
 */
class ReplyWriter {
  #sink: ByteSink;
  #queue: { parts: Uint8Array[]; done: (err?: unknown) => void }[] = [];
  #busy = false;
  #failed: unknown = null;
  #scratch = new Uint8Array(COALESCE_BUFFER);

  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  get failed(): boolean {
    return this.#failed !== null;
  }

  send(parts: Uint8Array[], done: (err?: unknown) => void): void {
    if (this.#failed !== null) {
      done(this.#failed);
      return;
    }
    this.#queue.push({ parts, done });
    if (!this.#busy) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#busy = true;
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        let fill = 0;
        for (const entry of batch) {
          for (const p of entry.parts) {
            if (p.length > COALESCE_LIMIT || fill + p.length > this.#scratch.length) {
              if (fill > 0) {
                await writeAll(this.#sink, this.#scratch.subarray(0, fill));
                fill = 0;
              }
              if (p.length > COALESCE_LIMIT) {
                await writeAll(this.#sink, p);
                continue;
              }
            }
            this.#scratch.set(p, fill);
            fill += p.length;
          }
        }
        if (fill > 0) await writeAll(this.#sink, this.#scratch.subarray(0, fill));
        for (const entry of batch) entry.done();
      } catch (err) {
        this.#failed = err;
        for (const entry of batch) entry.done(err);
        for (const entry of this.#queue) entry.done(err);
        this.#queue = [];
      }
    }
    this.#busy = false;
  }
}

/**
 * Reuses READ reply buffers once they have been written. Fresh large buffers cost a zero-fill,
 * page faults and GC work on every request; with steady request sizes the pool makes that a
 * one-off. One pool may be shared by all connections of a server; it holds at most `maxBytes`
 * of idle buffers.
 */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #bytes = 0;
  #maxBytes: number;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Buffers handed out from the pool / freshly allocated (for logs and benchmarks). */
  readonly stats = { reused: 0, allocated: 0 };

  /** A buffer of exactly `size` bytes with unspecified contents. */
  take(size: number): Uint8Array {
    const b = this.#free.get(size)?.pop();
    if (b === undefined) {
      this.stats.allocated++;
      return new Uint8Array(size);
    }
    this.stats.reused++;
    this.#bytes -= size;
    return b;
  }

  /** Returns a buffer for reuse (dropped if the pool is full). */
  give(b: Uint8Array): void {
    if (this.#bytes + b.length > this.#maxBytes) return;
    let list = this.#free.get(b.length);
    if (list === undefined) {
      list = [];
      this.#free.set(b.length, list);
    }
    list.push(b);
    this.#bytes += b.length;
  }
}

/** Bounds requests in flight (count and payload bytes) on one connection. */
class InFlightBudget {
  #count = 0;
  #bytes = 0;
  #maxCount: number;
  #maxBytes: number;
  #waiters: (() => void)[] = [];
  #idle: (() => void)[] = [];

  constructor(maxCount: number, maxBytes: number) {
    this.#maxCount = maxCount;
    this.#maxBytes = maxBytes;
  }

  get count(): number {
    return this.#count;
  }

  #fits(bytes: number): boolean {
    // One request may always run, however large, so a big request cannot deadlock.
    return this.#count === 0 ||
      (this.#count < this.#maxCount && this.#bytes + bytes <= this.#maxBytes);
  }

  /** Takes budget at once if it fits (the common case, with no promise to wait on). */
  tryAcquire(bytes: number): boolean {
    if (!this.#fits(bytes)) return false;
    this.#count++;
    this.#bytes += bytes;
    return true;
  }

  async acquire(bytes: number): Promise<void> {
    while (!this.#fits(bytes)) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#count++;
    this.#bytes += bytes;
  }

  release(bytes: number): void {
    this.#count--;
    this.#bytes -= bytes;
    const w = this.#waiters;
    this.#waiters = [];
    for (const resolve of w) resolve();
    if (this.#count === 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }

  idle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}

/** A reply ready to write; `pooled` goes back to the buffer pool once written. */
interface Reply {
  parts: Uint8Array[];
  pooled?: Uint8Array;
}

/** How the transmission phase of one connection ended. */
export type TransmissionEnd =
  | "disconnect" // NBD_CMD_DISC: the clean way
  | "eof" // the client hung up between requests
  | "protocol-error" // framing violation
  | "write-error" // a reply could not be written
  | "shutdown"; // the server is closing

/** Settings of one connection's transmission phase. */
export interface TransmissionOptions {
  /** The device. */
  backend: BlockBackend;
  /** Negotiated state (size, flags, structured replies, contexts). */
  context: RequestContext;
  /** Context id for `base:allocation` replies. */
  baseAllocationId: number;
  /** Most requests in flight at once. @default 64 */
  maxInFlight?: number;
  /** Most READ/WRITE payload bytes in flight at once. @default 64 MiB */
  maxInFlightBytes?: number;
  /** Log sink. */
  log?: NbdLogger;
  /** Label for log lines (e.g. "conn 3"). */
  label?: string;
  /** Reply buffer pool, shareable between connections; a private 16 MiB one by default. */
  pool?: BufferPool;
}

/** Counters of one connection (read by the server for its totals). */
export interface TransmissionStats {
  /** Requests received (including rejected ones and DISC). */
  requests: number;
  /** Requests answered with an error. */
  errors: number;
  /** Bytes returned by READ. */
  bytesRead: number;
  /** Bytes accepted by WRITE. */
  bytesWritten: number;
}

/** One connection's transmission phase. */
export class TransmissionSession {
  #reader: BufferedReader;
  #writer: ReplyWriter;
  #opts: TransmissionOptions;
  #budget: InFlightBudget;
  #pool: BufferPool;
  #shuttingDown = false;
  #log: NbdLogger;
  #label: string;
  /** Counters, updated as requests complete. */
  readonly stats: TransmissionStats = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };

  constructor(reader: BufferedReader, sink: ByteSink, options: TransmissionOptions) {
    this.#reader = reader;
    this.#writer = new ReplyWriter(sink);
    this.#opts = options;
    this.#budget = new InFlightBudget(
      options.maxInFlight ?? 64,
      options.maxInFlightBytes ?? 64 * 1024 * 1024,
    );
    this.#log = options.log ?? (() => {});
    this.#label = options.label ?? "conn";
    this.#pool = options.pool ?? new BufferPool(16 * 1024 * 1024);
  }

  /** Requests currently in flight. */
  get inFlight(): number {
    return this.#budget.count;
  }

  /**
   * Stops taking new requests (later ones get ESHUTDOWN) and resolves once every request in
   * flight has been answered. The caller then closes the socket, which ends {@linkcode run}.
   */
  shutdown(): Promise<void> {
    this.#shuttingDown = true;
    return this.#budget.idle();
  }

  /** Serves requests until the client disconnects or breaks framing. */
  async run(): Promise<TransmissionEnd> {
    let end: TransmissionEnd;
    try {
      end = await this.#loop();
    } catch (err) {
      if (this.#shuttingDown) {
        end = "shutdown";
      } else if (err instanceof NbdProtocolError) {
        this.#log("warn", `${this.#label}: ${err.message}; closing the connection`);
        end = "protocol-error";
      } else {
        // The socket failed under us (reset, closed): the client is gone.
        end = "eof";
      }
    }
    // Never leave backend calls running past the connection (the caller may close it next).
    await this.#budget.idle();
    return end;
  }

  async #loop(): Promise<TransmissionEnd> {
    const ctx = this.#opts.context;
    while (true) {
      if (this.#writer.failed) return "write-error";
      const header = await this.#reader.view(Size.REQUEST_HEADER, "request header");
      if (header === null) return this.#shuttingDown ? "shutdown" : "eof";
      const req = decodeRequest(header);
      if (req === null) {
        const v = new DataView(header.buffer, header.byteOffset, 4);
        throw new NbdProtocolError(
          "BAD_MAGIC",
          `Cannot read request: magic is 0x${
            v.getUint32(0).toString(16).padStart(8, "0")
          }, expected 0x${Magic.REQUEST.toString(16)}`,
        );
      }
      this.stats.requests++;
      if (req.type === Command.DISC) {
        this.#log("debug", `${this.#label}: NBD_CMD_DISC`);
        return "disconnect";
      }
      let rejection = this.#shuttingDown
        ? {
          error: "ESHUTDOWN" as const,
          message: "Cannot run request: the server is shutting down",
        }
        : validateRequest(req, ctx);
      const payloadBytes = req.type === Command.WRITE ? req.length : 0;
      const cost = rejection === null && (req.type === Command.READ || payloadBytes > 0)
        ? req.length
        : 0;
      if (!this.#budget.tryAcquire(cost)) await this.#budget.acquire(cost);
      let payload: Uint8Array | undefined;
      if (payloadBytes > 0) {
        try {
          if (rejection === null) {
            payload = this.#pool.take(payloadBytes);
            await this.#reader.readInto(payload, `${commandName(req.type)} payload`);
          } else {
            await this.#reader.skip(payloadBytes, `rejected ${commandName(req.type)} payload`);
          }
        } catch (err) {
          // No reply will follow (the stream is broken): give the budget back, or run() would
          // wait for this request forever.
          this.#budget.release(cost);
          throw err;
        }
      }
      if (rejection !== null) {
        this.#log("debug", `${this.#label}: ${rejection.message} (${rejection.error})`);
        this.stats.errors++;
        this.#reply({ parts: this.#errorParts(req, rejection) }, cost);
        continue;
      }
      this.#execute(req, payload).then(
        (reply) => this.#reply(reply, cost),
        (err) => {
          // #execute maps every backend error; reaching here is a bug in this module.
          this.#log("error", `${this.#label}: ${commandName(req.type)} failed: ${err}`);
          rejection = { error: "EIO", message: "Cannot complete request: internal error" };
          this.#reply({ parts: this.#errorParts(req, rejection) }, cost);
        },
      );
    }
  }

  #reply(reply: Reply, cost: number): void {
    this.#writer.send(reply.parts, () => {
      if (reply.pooled !== undefined) this.#pool.give(reply.pooled);
      this.#budget.release(cost);
    });
  }

  #errorParts(req: Request, rej: RequestRejection): Uint8Array[] {
    const code = errorValue(rej.error);
    if (this.#opts.context.structuredReplies) {
      return [encodeStructuredError(req.cookie, code, rej.message)];
    }
    return [encodeSimpleReply(req.cookie, code)];
  }

  #ok(req: Request): Uint8Array[] {
    return [encodeSimpleReply(req.cookie, 0)];
  }

  async #execute(req: Request, payload: Uint8Array | undefined): Promise<Reply> {
    const b = this.#opts.backend;
    const fua = (req.flags & CommandFlag.FUA) !== 0;
    try {
      switch (req.type) {
        case Command.READ: {
          if (b.readInto) return await this.#readIntoReply(b, req);
          const data = await b.read(req.offset, req.length);
          if (data.length !== req.length) {
            throw new Error(`backend returned ${data.length} of ${req.length} bytes`);
          }
          this.stats.bytesRead += data.length;
          return { parts: this.#readReply(req, data) };
        }
        case Command.WRITE:
          await b.write(req.offset, payload!, fua ? { fua } : undefined);
          // Reused only after success: a failed write may still have parts of it running (e.g.
          // a Promise.all that rejected early), which must not see the buffer change.
          this.#pool.give(payload!);
          this.stats.bytesWritten += req.length;
          return { parts: this.#ok(req) };
        case Command.FLUSH:
          await b.flush();
          return { parts: this.#ok(req) };
        case Command.TRIM:
          await b.trim(req.offset, req.length);
          if (fua) await b.flush();
          return { parts: this.#ok(req) };
        case Command.WRITE_ZEROES: {
          const fastZero = (req.flags & CommandFlag.FAST_ZERO) !== 0;
          if (fastZero && b.canFastZero !== true) {
            // Not an error worth logging: the client asked "only if cheap" and it is not.
            this.stats.errors++;
            return {
              parts: this.#errorParts(req, {
                error: "ENOTSUP",
                message: "Cannot zero fast: the backend has no fast zeroing",
              }),
            };
          }
          const noHole = (req.flags & CommandFlag.NO_HOLE) !== 0;
          await b.writeZeroes(req.offset, req.length, { fua, noHole, fastZero });
          return { parts: this.#ok(req) };
        }
        case Command.BLOCK_STATUS: {
          const reqOne = (req.flags & CommandFlag.REQ_ONE) !== 0;
          const extents = b.blockStatus
            ? await b.blockStatus(req.offset, req.length)
            : [{ length: req.length, zero: false, hole: false }];
          const desc = extentsToDescriptors(extents, req.length, reqOne ? 1 : Limit.MAX_EXTENTS);
          const len = 4 + desc.length * 8;
          const buf = encodeStructuredHeader(req.cookie, {
            flags: ReplyFlag.DONE,
            type: ReplyType.BLOCK_STATUS,
            length: len,
          }, len);
          const v = new DataView(buf.buffer);
          let o = Size.STRUCTURED_REPLY_HEADER;
          v.setUint32(o, this.#opts.baseAllocationId);
          o += 4;
          for (const [l, f] of desc) {
            v.setUint32(o, l);
            v.setUint32(o + 4, f);
            o += 8;
          }
          return { parts: [buf] };
        }
        default:
          // validateRequest lets only the commands above through.
          throw new Error(`unexpected ${commandName(req.type)}`);
      }
    } catch (err) {
      const code = nbdErrorOf(err);
      if (code !== "ENOTSUP") {
        this.#log(
          "error",
          `${this.#label}: ${commandName(req.type)} offset=${req.offset} length=${req.length} ` +
            `failed (${code}): ${err instanceof Error ? err.message : String(err)}` +
            (err instanceof Error && err.cause !== undefined ? ` (cause: ${err.cause})` : ""),
        );
      }
      this.stats.errors++;
      return {
        parts: this.#errorParts(req, {
          error: code,
          message: `Cannot run ${commandName(req.type)}: backend reported ${code}`,
        }),
      };
    }
  }

  /** READ through `readInto`: header and data in one pooled buffer, so one socket write. */
  async #readIntoReply(b: BlockBackend, req: Request): Promise<Reply> {
    const structured = this.#opts.context.structuredReplies;
    const dataAt = structured ? Size.STRUCTURED_REPLY_HEADER + 8 : Size.SIMPLE_REPLY_HEADER;
    const buf = this.#pool.take(dataAt + req.length);
    const v = new DataView(buf.buffer, buf.byteOffset, dataAt);
    if (structured) {
      v.setUint32(0, Magic.STRUCTURED_REPLY);
      v.setUint16(4, ReplyFlag.DONE);
      v.setUint16(6, ReplyType.OFFSET_DATA);
      buf.set(req.cookie, 8);
      v.setUint32(16, 8 + req.length);
      v.setBigUint64(Size.STRUCTURED_REPLY_HEADER, BigInt(req.offset));
    } else {
      v.setUint32(0, Magic.SIMPLE_REPLY);
      v.setUint32(4, 0);
      buf.set(req.cookie, 8);
    }
    // On failure the buffer is dropped, not pooled: parts of the read may still be running.
    await b.readInto!(req.offset, buf.subarray(dataAt));
    this.stats.bytesRead += req.length;
    return { parts: [buf], pooled: buf };
  }

  #readReply(req: Request, data: Uint8Array): Uint8Array[] {
    if (this.#opts.context.structuredReplies) {
      const h = encodeStructuredHeader(req.cookie, {
        flags: ReplyFlag.DONE,
        type: ReplyType.OFFSET_DATA,
        length: 8 + data.length,
      }, 8);
      new DataView(h.buffer).setBigUint64(Size.STRUCTURED_REPLY_HEADER, BigInt(req.offset));
      return [h, data];
    }
    return [encodeSimpleReply(req.cookie, 0), data];
  }
}
