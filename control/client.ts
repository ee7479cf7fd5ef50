/**
 * A control protocol client: id correlation, cancellation and notifications over a
 * {@linkcode LineConnection}. Used by the SDK (`mod.ts`), the MCP server and the CLI.
 *
 * One record per in-flight request in one map (id → method, settle functions, abort cleanup);
 * it is removed in one place. No timers: callers pass an `AbortSignal` (e.g.
 * `AbortSignal.timeout(ms)`), and an aborted request sends `$/cancel`.
 *
 * @module
 */

import { LineConnection } from "./connection.ts";
import { ControlConnectionError, RpcError } from "./errors.ts";
import { Limits } from "./wire.ts";

/** A notification from the server. */
export interface ControlNotification {
  /** Its method ("output", "exit", "file_change", "ready"). */
  method: string;
  /** The notification's `params` object (`{}` when it had none). */
  params: Record<string, unknown>;
}

/** Options of {@linkcode ControlClient.request}. */
export interface RequestOptions {
  /** Aborts the request locally and sends `$/cancel` to the server. */
  signal?: AbortSignal;
}

interface Pending {
  method: string;
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
  cleanup: () => void;
}

/** Options of {@linkcode ControlClient}. */
export interface ControlClientOptions {
  /** Longest line accepted from the server. */
  maxLineBytes?: number;
}

/** Speaks the control protocol to one server. */
export class ControlClient implements AsyncDisposable {
  readonly #conn: LineConnection;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<(n: ControlNotification) => void>();
  #nextId = 1;
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  readonly #loop: Promise<void>;
  #closeReason: ControlConnectionError | null = null;
  #onClose: (() => void) | null = null;

  /** Wraps a byte-stream pair (see {@linkcode connectControl} for a socket). */
  constructor(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
    options: ControlClientOptions = {},
  ) {
    this.#conn = new LineConnection(readable, writable, {
      maxLineBytes: options.maxLineBytes ?? Limits.MAX_CLIENT_LINE_BYTES,
      maxQueuedBytes: Limits.CLIENT_QUEUE_BYTES,
    });
    this.#ready = new Promise((r) => (this.#resolveReady = r));
    this.#loop = this.#readLoop();
  }

  /** Resolves once the server's `ready` notification arrived. */
  get ready(): Promise<void> {
    return this.#ready;
  }

  /** Resolves when the connection closed. */
  get closed(): Promise<void> {
    return this.#loop;
  }

  /** True once closed. */
  get isClosed(): boolean {
    return this.#closeReason !== null;
  }

  /** Requests in flight. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** @internal Runs `fn` when the connection closes (the SDK closes the socket). */
  set onClose(fn: (() => void) | null) {
    this.#onClose = fn;
  }

  /** Adds a notification listener; returns a function that removes it. */
  onNotification(listener: (n: ControlNotification) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Sends a request and resolves with its result; rejects with {@linkcode RpcError}. */
  request<T = Record<string, unknown>>(
    method: string,
    params?: Record<string, unknown>,
    options: RequestOptions = {},
  ): Promise<T> {
    if (this.#closeReason) return Promise.reject(this.#closeReason);
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        this.#settle(id)?.reject(signal!.reason);
        this.#conn.send({ jsonrpc: "2.0", method: "$/cancel", params: { id } });
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#pending.set(id, {
        method,
        resolve: resolve as (r: unknown) => void,
        reject,
        cleanup: () => signal?.removeEventListener("abort", onAbort),
      });
      const msg: Record<string, unknown> = { jsonrpc: "2.0", id, method };
      if (params !== undefined) msg.params = params;
      this.#conn.send(msg);
    });
  }

  /** Sends a notification (no answer). */
  notify(method: string, params?: Record<string, unknown>): void {
    const msg: Record<string, unknown> = { jsonrpc: "2.0", method };
    if (params !== undefined) msg.params = params;
    this.#conn.send(msg);
  }

  /** Resolves when the outgoing queue has room (for large uploads). */
  writable(): Promise<void> {
    return this.#conn.ready();
  }

  /** Closes the connection; pending requests reject with CLOSED. */
  async close(): Promise<void> {
    await this.#conn.close();
    await this.#loop;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    p.cleanup();
    return p;
  }

  async #readLoop(): Promise<void> {
    let reason = "the server closed the connection";
    try {
      for await (const line of this.#conn.lines()) {
        if (line.kind === "too_long") {
          reason = `the server sent a ${line.bytes}-byte line (limit exceeded)`;
          break;
        }
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line.text);
        } catch {
          reason = "the server sent a line that is not JSON";
          break;
        }
        this.#dispatch(msg);
      }
    } catch (err) {
      reason = `reading failed: ${err instanceof Error ? err.message : err}`;
    }
    this.#closeReason = new ControlConnectionError(
      "CLOSED",
      `Cannot finish the request: ${reason}`,
    );
    for (const id of [...this.#pending.keys()]) this.#settle(id)?.reject(this.#closeReason);
    await this.#conn.close();
    this.#resolveReady();
    this.#onClose?.();
  }

  #dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.method === "string") {
      if (msg.method === "ready") this.#resolveReady();
      const params =
        (typeof msg.params === "object" && msg.params !== null ? msg.params : {}) as Record<
          string,
          unknown
        >;
      const n = { method: msg.method, params };
      for (const l of this.#listeners) l(n);
      return;
    }
    if (typeof msg.id !== "number") return; // e.g. a parse error about a line we sent (id null)
    const p = this.#settle(msg.id);
    if (!p) return; // cancelled locally
    if ("error" in msg) p.reject(RpcError.fromObject(msg.error));
    else p.resolve(msg.result);
  }
}

/** Connects to a control socket at `path` and waits for `ready`. */
export async function connectControl(
  path: string,
  options: ControlClientOptions = {},
): Promise<ControlClient> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (err) {
    throw new ControlConnectionError(
      "CONNECT",
      `Cannot connect to control socket ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const client = new ControlClient(conn.readable, conn.writable, options);
  client.onClose = () => {
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  await client.ready;
  if (client.isClosed) {
    throw new ControlConnectionError("CONNECT", `Cannot connect to control socket ${path}: closed`);
  }
  return client;
}
