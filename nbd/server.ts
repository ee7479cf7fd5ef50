/**
 * `NbdServer`: serves one {@linkcode BlockBackend} on a Unix socket to any number of NBD
 * clients at once (fixed newstyle handshake, then the transmission phase).
 *
 * The export is reachable as "" (the default export) and, if given, under `exportName`.
 * CAN_MULTI_CONN is advertised only when the backend says every connection sees one
 * consistent device (`backend.multiConn`).
 *
 * Lifecycle: {@linkcode NbdServer.listen} → serve → {@linkcode NbdServer.close}, which stops
 * accepting, lets requests in flight finish, closes every connection and removes the socket
 * file. {@linkcode NbdServer.allClientsDisconnected} resolves when the last client has left
 * after an NBD_CMD_DISC, so a caller can save the device (e.g. as a checkpoint) afterwards.
 *
 * @module
 */

import type { BlockBackend } from "./backend.ts";
import { nbdReader } from "./_io.ts";
import { NbdProtocolError } from "./errors.ts";
import { type ExportOffer, serverHandshake } from "./handshake.ts";
import { BufferPool } from "./buffer_pool.ts";
import {
  type NbdLogger,
  type TransmissionEnd,
  TransmissionSession,
  type TransmissionStats,
} from "./transmission.ts";
import { flagNames, TransmissionFlag } from "./wire.ts";

/** Options of {@linkcode NbdServer.listen}. */
export interface NbdServerOptions {
  /**
   * Path of the Unix socket to create (under 108 bytes). A stale socket file there is
   * replaced; a socket another server still answers on is not.
   */
  socketPath: string;
  /** Export name accepted besides "" (and listed by NBD_OPT_LIST). @default "" */
  exportName?: string;
  /** Description sent in NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Most connections at once; more are closed as soon as they are accepted. @default 64 */
  maxConnections?: number;
  /** Most requests in flight per connection. @default 64 */
  maxInFlight?: number;
  /** Most READ/WRITE payload bytes in flight per connection. @default 64 MiB */
  maxInFlightBytes?: number;
  /** A client must finish the handshake within this many milliseconds. @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * On `close()`, how long requests in flight may take before connections are cut anyway
   * (e.g. a client that stopped reading its replies). @default 10000
   */
  shutdownGraceMs?: number;
  /** Log sink; silent by default. */
  log?: NbdLogger;
}

/** Totals over the server's life. */
export interface NbdServerStats extends TransmissionStats {
  /** Connections accepted. */
  connections: number;
  /** Connections that ended with a framing violation or a failed handshake. */
  protocolErrors: number;
}

interface Connection {
  id: number;
  conn: Deno.Conn;
  session: TransmissionSession | null;
  done: Promise<void>;
}

/** An NBD server on a Unix socket. */
export class NbdServer {
  #backend: BlockBackend;
  #opts: NbdServerOptions;
  #listener: Deno.Listener;
  #offer: ExportOffer;
  #log: NbdLogger;
  #connections = new Map<number, Connection>();
  #nextId = 1;
  #closing: Promise<void> | null = null;
  #acceptLoop: Promise<void>;
  #discSinceIdle = false;
  /** READ reply buffers shared by all connections (idle buffers capped at 64 MiB). */
  #pool = new BufferPool(64 * 1024 * 1024);
  #idleWaiters: (() => void)[] = [];
  /** Totals, updated as connections end. */
  readonly stats: NbdServerStats = {
    connections: 0,
    protocolErrors: 0,
    requests: 0,
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };

  private constructor(backend: BlockBackend, listener: Deno.Listener, opts: NbdServerOptions) {
    this.#backend = backend;
    this.#listener = listener;
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    const name = opts.exportName ?? "";
    let flags = TransmissionFlag.HAS_FLAGS;
    if (backend.readOnly) {
      flags |= TransmissionFlag.READ_ONLY;
    } else {
      flags |= TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
        TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES |
        TransmissionFlag.SEND_FAST_ZERO;
    }
    if (backend.multiConn) flags |= TransmissionFlag.CAN_MULTI_CONN;
    this.#offer = {
      names: name === "" ? [""] : ["", name],
      listName: name,
      size: backend.size,
      flags,
      blockStatus: typeof backend.blockStatus === "function",
      ...(opts.description !== undefined ? { description: opts.description } : {}),
    };
    this.#acceptLoop = this.#accept();
  }

  /**
   * Starts serving `backend` on `options.socketPath`.
   *
   * @example
   * ```ts
   * import { FileBackend, NbdServer } from "./mod.ts";
   * const dir = await Deno.makeTempDir();
   * await Deno.writeFile(`${dir}/disk.img`, new Uint8Array(1024 * 1024));
   * const backend = await FileBackend.open(`${dir}/disk.img`);
   * const server = await NbdServer.listen(backend, { socketPath: `${dir}/disk.sock` });
   * // Now: qemu-img info "nbd+unix:///?socket=${dir}/disk.sock"
   * await server.close();
   * await backend.close();
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  static async listen(backend: BlockBackend, options: NbdServerOptions): Promise<NbdServer> {
    const path = options.socketPath;
    // sun_path holds 108 bytes including the terminating NUL.
    if (new TextEncoder().encode(path).length > 107) {
      throw new RangeError(`Cannot listen on ${path}: a Unix socket path must be under 108 bytes`);
    }
    let st: Deno.FileInfo | null = null;
    try {
      st = await Deno.lstat(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (st !== null) {
      if (!st.isSocket) {
        throw new Deno.errors.AlreadyExists(`Cannot listen on ${path}: a non-socket file exists`);
      }
      // A socket someone still answers on belongs to a live server: never steal it.
      let live = false;
      try {
        (await Deno.connect({ transport: "unix", path })).close();
        live = true;
      } catch {
        // refused: a stale socket left by a server that died
      }
      if (live) {
        throw new Deno.errors.AddrInUse(`Cannot listen on ${path}: another server is serving it`);
      }
      await Deno.remove(path);
    }
    const listener = Deno.listen({ transport: "unix", path });
    const server = new NbdServer(backend, listener, options);
    server.#log(
      "info",
      `serving ${backend.size} bytes on ${path} (flags ${
        flagNames(TransmissionFlag, server.#offer.flags).join("|")
      })`,
    );
    return server;
  }

  /** The socket path clients connect to. */
  get socketPath(): string {
    return this.#opts.socketPath;
  }

  /** Connections currently open. */
  get activeConnections(): number {
    return this.#connections.size;
  }

  /** Reply/payload buffers reused from the pool vs freshly allocated. */
  get bufferStats(): { reused: number; allocated: number } {
    return { ...this.#pool.stats };
  }

  /** Transmission flags advertised (without SEND_DF, which depends on the client). */
  get transmissionFlags(): number {
    return this.#offer.flags;
  }

  /**
   * Resolves the next time no client is connected and at least one client has left with
   * NBD_CMD_DISC since the last time this happened (e.g. a VM shut down cleanly).
   */
  allClientsDisconnected(): Promise<void> {
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#closing !== null || err instanceof Deno.errors.BadResource) return;
        // E.g. out of file descriptors: keep the server up and retry shortly.
        this.#log("warn", `Cannot accept a connection: ${err}; retrying`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#closing !== null) {
        conn.close();
        continue;
      }
      const max = this.#opts.maxConnections ?? 64;
      if (this.#connections.size >= max) {
        this.#log("warn", `refusing a connection: already ${max} open`);
        conn.close();
        continue;
      }
      const id = this.#nextId++;
      this.stats.connections++;
      const c: Connection = { id, conn, session: null, done: Promise.resolve() };
      this.#connections.set(id, c);
      c.done = this.#serve(c);
    }
  }

  async #serve(c: Connection): Promise<void> {
    const label = `conn ${c.id}`;
    const reader = nbdReader(c.conn);
    let end: TransmissionEnd | "handshake-ended" = "handshake-ended";
    const timeoutMs = this.#opts.handshakeTimeoutMs ?? 10_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#log("warn", `${label}: handshake not finished after ${timeoutMs} ms; closing`);
      closeQuietly(c.conn);
    }, timeoutMs);
    try {
      let negotiated;
      try {
        negotiated = await serverHandshake(reader, c.conn, this.#offer);
      } finally {
        clearTimeout(timer);
      }
      if (negotiated === null) {
        this.#log("debug", `${label}: client left during the handshake`);
        return;
      }
      if (this.#closing !== null) return;
      this.#log(
        "debug",
        `${label}: export "${negotiated.exportName}" structured=${negotiated.structuredReplies} ` +
          `base:allocation=${negotiated.baseAllocationId !== null}`,
      );
      const session = new TransmissionSession(reader, c.conn, {
        backend: this.#backend,
        context: {
          size: this.#backend.size,
          flags: negotiated.flags,
          structuredReplies: negotiated.structuredReplies,
          baseAllocation: negotiated.baseAllocationId !== null,
        },
        baseAllocationId: negotiated.baseAllocationId ?? 0,
        ...(this.#opts.maxInFlight !== undefined ? { maxInFlight: this.#opts.maxInFlight } : {}),
        ...(this.#opts.maxInFlightBytes !== undefined
          ? { maxInFlightBytes: this.#opts.maxInFlightBytes }
          : {}),
        log: this.#log,
        label,
        pool: this.#pool,
      });
      c.session = session;
      end = await session.run();
      this.stats.requests += session.stats.requests;
      this.stats.errors += session.stats.errors;
      this.stats.bytesRead += session.stats.bytesRead;
      this.stats.bytesWritten += session.stats.bytesWritten;
      if (end === "protocol-error") this.stats.protocolErrors++;
      this.#log("debug", `${label}: ended (${end})`);
    } catch (err) {
      if (err instanceof NbdProtocolError) {
        this.stats.protocolErrors++;
        this.#log("warn", `${label}: ${err.message}; closing the connection`);
      } else if (!timedOut && this.#closing === null) {
        this.#log("debug", `${label}: connection failed during the handshake: ${err}`);
      }
    } finally {
      closeQuietly(c.conn);
      this.#connections.delete(c.id);
      if (end === "disconnect") this.#discSinceIdle = true;
      if (this.#connections.size === 0 && this.#discSinceIdle) {
        this.#discSinceIdle = false;
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    }
  }

  /**
   * Stops accepting, answers requests already in flight (new ones get ESHUTDOWN), closes every
   * connection (clients then see the socket close), and removes the socket file. Safe to call
   * more than once. The backend stays open: the caller owns it (e.g. to save it next).
   */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    // Synchronously, before any await: from here on every new request gets ESHUTDOWN.
    const drained = new Map<number, Promise<void>>();
    for (const c of this.#connections.values()) {
      if (c.session !== null) drained.set(c.id, c.session.shutdown());
    }
    await this.#acceptLoop;
    const graceMs = this.#opts.shutdownGraceMs ?? 10_000;
    await Promise.all(
      [...this.#connections.values()].map(async (c) => {
        const idle = drained.get(c.id) ?? c.session?.shutdown();
        if (idle !== undefined) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const expired = new Promise<void>((resolve) => {
            timer = setTimeout(() => {
              this.#log("warn", `conn ${c.id}: requests still in flight after ${graceMs} ms`);
              resolve();
            }, graceMs);
          });
          try {
            await Promise.race([idle, expired]);
          } finally {
            clearTimeout(timer);
          }
        }
        closeQuietly(c.conn);
        await c.done;
      }),
    );
    await Deno.remove(this.#opts.socketPath).catch(() => {});
  }

  /** Same as {@linkcode NbdServer.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}
