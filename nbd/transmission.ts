/**
 * The transmission phase of one connection ({@linkcode TransmissionSession}): read requests,
 * check each with `validateRequest` (request.ts), dispatch to the {@linkcode BlockBackend}, and
 * write replies (reply.ts).
 *
 * Requests run concurrently and replies go out in completion order (the protocol allows any
 * order; clients match them by cookie). A per-connection budget (in_flight.ts) bounds requests
 * in flight and their payload bytes; when it is exhausted we stop reading the socket, which is
 * the backpressure a client sees. The budget is returned only once a reply has been written, so
 * a client that never reads its replies cannot make us buffer without limit.
 *
 * Two classes of failure, as in nbdkit: a bad request (out of range, zero length, unknown
 * command or flag, write to a read-only export) gets an NBD error reply and the connection keeps
 * serving; a framing violation (bad request magic, stream ending mid-message) ends the
 * connection. A rejected WRITE's payload is still read and discarded so the stream stays in
 * sync.
 *
 * @module
 */

import type { BlockBackend } from "./backend.ts";
import type { BufferedReader, ByteSink } from "./_io.ts";
import { BufferPool } from "./buffer_pool.ts";
import { errorValue, nbdErrorOf, NbdProtocolError } from "./errors.ts";
import { InFlightBudget } from "./in_flight.ts";
import {
  encodeSimpleReply,
  encodeStructuredError,
  encodeStructuredHeader,
  extentsToDescriptors,
  ReplyWriter,
} from "./reply.ts";
import {
  decodeRequest,
  type Request,
  type RequestContext,
  type RequestRejection,
  validateRequest,
} from "./request.ts";
import {
  Command,
  CommandFlag,
  commandName,
  Limit,
  Magic,
  ReplyFlag,
  ReplyType,
  Size,
} from "./wire.ts";

/** Log sink: level plus a message that names every protocol value. */
export type NbdLogger = (level: "debug" | "info" | "warn" | "error", message: string) => void;

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

  /** Serves requests read from `reader`, writing replies to `sink`. */
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
