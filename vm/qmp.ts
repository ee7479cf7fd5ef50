/**
 * A QMP client over a connected byte stream (QEMU's monitor on a Unix socket in the instance
 * folder): the greeting and capability negotiation, commands with ids and deadlines, events.
 * The protocol logic is the sans-I/O {@linkcode QmpSession} in `qmp_protocol.ts`; this file
 * only moves bytes.
 *
 * @example
 * ```ts ignore
 * const qmp = await QmpClient.connect(conn, { signal: AbortSignal.timeout(10_000) });
 * const migrated = qmp.waitForEvent("MIGRATION", { match: (d) => d.status === "completed" });
 * await qmp.execute("stop");
 * ```
 *
 * @module
 */

import {
  QmpError,
  type QmpEvent,
  type QmpOutcome,
  QmpSession,
  type QmpVersion,
} from "./qmp_protocol.ts";

export {
  MAX_QMP_MESSAGE,
  QmpDecoder,
  QmpError,
  type QmpErrorCode,
  type QmpEvent,
  type QmpMessage,
  QmpSession,
  type QmpVersion,
} from "./qmp_protocol.ts";

/** Options of {@linkcode QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Aborts the handshake (default: 30 s; QEMU greets within milliseconds of connecting). */
  signal?: AbortSignal;
}

/** Options of {@linkcode QmpClient.execute}. */
export interface QmpExecuteOptions {
  /** Stops waiting for the answer (the command may still run in QEMU). */
  signal?: AbortSignal;
}

/** Options of {@linkcode QmpClient.waitForEvent}. */
export interface WaitForEventOptions {
  /** Only events whose data this accepts. */
  match?: (data: Record<string, unknown>) => boolean;
  /** Stops waiting. */
  signal?: AbortSignal;
}

interface Settle {
  resolve: (value: unknown) => void;
  reject: (err: QmpError) => void;
}

interface EventWaiter {
  name: string;
  match?: (data: Record<string, unknown>) => boolean;
  resolve: (event: QmpEvent) => void;
  reject: (err: QmpError) => void;
}

function aborted(what: string, signal: AbortSignal): QmpError {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason);
  return new QmpError("aborted", `Cannot ${what}: gave up waiting (${reason})`, {
    cause: signal.reason,
  });
}

/** A QMP connection in command mode. Close it (or let QEMU exit) to end it. */
export class QmpClient implements AsyncDisposable {
  /** QEMU's version from the greeting. */
  readonly version: QmpVersion;
  /** Resolves when the connection ended, with the error that ended it if any. Never rejects. */
  readonly closed: Promise<QmpError | undefined>;
  #session: QmpSession<Settle>;
  #conn: Deno.Conn;
  #waiters = new Set<EventWaiter>();
  #listeners = new Set<(event: QmpEvent) => void>();
  #ended: QmpError | undefined;
  #writing: Promise<void> = Promise.resolve();

  private constructor(
    conn: Deno.Conn,
    session: QmpSession<Settle>,
    version: QmpVersion,
    reader: ReadableStreamDefaultReader<Uint8Array>,
    early: QmpOutcome<Settle>[],
  ) {
    this.#conn = conn;
    this.#session = session;
    this.version = version;
    this.closed = this.#readLoop(reader, early);
  }

  /**
   * Reads the greeting and negotiates capabilities on `conn` (QEMU's monitor socket); the
   * client then owns `conn`.
   *
   * @throws {QmpError} `protocol` on a peer that is not QMP, `closed` if it hangs up, `aborted`.
   */
  static async connect(conn: Deno.Conn, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const signal = options.signal ?? AbortSignal.timeout(30_000);
    const session = new QmpSession<Settle>();
    const reader = conn.readable.getReader();
    const onAbort = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      let version: QmpVersion | undefined;
      let early: QmpOutcome<Settle>[] = [];
      while (!version) {
        const { value, done } = await reader.read();
        if (signal.aborted) throw aborted("connect to QEMU's monitor", signal);
        if (done) {
          throw new QmpError(
            "closed",
            "Cannot connect to QEMU's monitor: it closed before greeting",
          );
        }
        const outcomes = session.receive(value);
        const i = outcomes.findIndex((o) => o.kind === "greeting");
        if (i >= 0) {
          version = (outcomes[i] as { version: QmpVersion }).version;
          early = outcomes.slice(i + 1);
        } else if (outcomes.length > 0) {
          throw new QmpError("protocol", "Cannot connect to QEMU's monitor: no greeting first");
        }
      }
      const client = new QmpClient(conn, session, version, reader, early);
      await client.execute("qmp_capabilities", undefined, { signal });
      return client;
    } catch (err) {
      try {
        conn.close();
      } catch { /* closed */ }
      if (err instanceof QmpError) throw err;
      if (signal.aborted) throw aborted("connect to QEMU's monitor", signal);
      throw new QmpError("closed", `Cannot connect to QEMU's monitor: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Runs `command` and resolves with its `return` value.
   *
   * @throws {QmpError} `command_failed` with QEMU's class and desc, `closed`, `aborted`.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#ended) return Promise.reject(this.#ended);
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(aborted(`run QEMU command ${command}`, signal));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(aborted(`run QEMU command ${command}`, signal!));
      signal?.addEventListener("abort", onAbort, { once: true });
      const settle: Settle = {
        resolve: (v) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(v as T);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      const bytes = this.#session.command(command, args, settle);
      this.#writing = this.#writing.then(() => this.#writeAll(bytes)).catch((err) => {
        this.#end(new QmpError("closed", `Cannot send to QEMU's monitor: ${err.message}`));
      });
    });
  }

  /**
   * Resolves with the next event `name` (whose data `match` accepts) that arrives after this
   * call. Register before the command that causes it, so the event cannot be missed.
   */
  waitForEvent(name: string, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    if (this.#ended) return Promise.reject(this.#ended);
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(aborted(`wait for QEMU event ${name}`, signal));
    return new Promise<QmpEvent>((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(aborted(`wait for QEMU event ${name}`, signal!));
      };
      const waiter: EventWaiter = {
        name,
        ...(options.match ? { match: options.match } : {}),
        resolve: (e) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(e);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Calls `listener` with every event until the returned function is called. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Closes the connection; unanswered commands fail with `closed`. */
  async close(): Promise<void> {
    this.#end(new QmpError("closed", "Cannot use QEMU's monitor: the connection was closed"));
    await this.closed;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
  }

  #dispatch(outcomes: QmpOutcome<Settle>[]): void {
    for (const o of outcomes) {
      if (o.kind === "reply") o.token.resolve(o.value);
      else if (o.kind === "failed") o.token.reject(o.error);
      else if (o.kind === "event") {
        for (const l of this.#listeners) l(o.event);
        for (const w of [...this.#waiters]) {
          if (w.name !== o.event.event || (w.match && !w.match(o.event.data))) continue;
          this.#waiters.delete(w);
          w.resolve(o.event);
        }
      }
    }
  }

  async #readLoop(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    early: QmpOutcome<Settle>[],
  ): Promise<QmpError | undefined> {
    try {
      this.#dispatch(early);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.#dispatch(this.#session.receive(value));
      }
      this.#end(new QmpError("closed", "Cannot use QEMU's monitor: QEMU closed the connection"));
    } catch (err) {
      this.#end(
        err instanceof QmpError
          ? err
          : new QmpError("closed", `Cannot use QEMU's monitor: ${(err as Error).message}`, {
            cause: err,
          }),
      );
    }
    try {
      reader.releaseLock();
    } catch { /* released */ }
    return this.#ended?.code === "closed" ? undefined : this.#ended;
  }

  #end(err: QmpError): void {
    if (this.#ended) return;
    this.#ended = err;
    for (const { token } of this.#session.drain()) token.reject(err);
    for (const w of this.#waiters) w.reject(err);
    this.#waiters.clear();
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
