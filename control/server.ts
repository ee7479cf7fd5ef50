/**
 * The control server: one {@linkcode ControlServer} per sandbox, one `ControlSession`
 * (session.ts) per connected client (control socket connection, or stdin/stdout for
 * `--stdio`). The server holds what sessions share (the backend, the process table, limits,
 * the clock) and hands each session a narrow view of it. Time comes from the
 * {@linkcode Clock} passed in.
 *
 * @module
 */

import type { ControlBackend } from "./backend.ts";
import { type Clock, realClock } from "./clock.ts";
import { LineConnection } from "./connection.ts";
import type { ServerLimits } from "./handler.ts";
import { ProcessTable } from "./processes.ts";
import { ControlSession, type SessionServer } from "./session.ts";
import { Limits } from "./wire.ts";

/** Options of {@linkcode ControlServer}. */
export interface ControlServerOptions {
  /** Time source (default: the real clock). */
  clock?: Clock;
  /** Overrides of {@linkcode Limits}. */
  limits?: Partial<ServerLimits>;
  /** Name and version reported by `initialize`. */
  serverInfo?: { name: string; version: string };
  /** Called with one line per notable event (protocol errors, session ends). */
  log?: (line: string) => void;
}

/** Serves the control protocol for one sandbox to any number of clients. */
export class ControlServer {
  /** The running sandbox the methods act on. */
  readonly backend: ControlBackend;
  /** Processes, shared by all sessions. */
  readonly processes: ProcessTable;
  /** Effective limits. */
  readonly limits: ServerLimits;
  /** Time source. */
  readonly clock: Clock;
  readonly #sessions = new Set<ControlSession>();
  /** What sessions see of this server. */
  readonly #view: SessionServer;
  #shutdownRequested = false;
  readonly #shutdown: Promise<void>;
  #resolveShutdown!: () => void;

  constructor(backend: ControlBackend, options: ControlServerOptions = {}) {
    this.backend = backend;
    this.clock = options.clock ?? realClock;
    this.limits = { ...Limits, ...options.limits };
    this.processes = new ProcessTable(backend, {
      ringBytes: this.limits.RING_BYTES,
      maxExited: this.limits.MAX_EXITED_PROCESSES,
      maxExitedBytes: this.limits.MAX_EXITED_OUTPUT_BYTES,
      maxLive: this.limits.MAX_LIVE_PROCESSES,
      clock: this.clock,
    });
    this.#shutdown = new Promise((r) => (this.#resolveShutdown = r));
    let watchCounter = 0;
    const log = options.log ?? (() => {});
    this.#view = {
      backend,
      processes: this.processes,
      limits: this.limits,
      clock: this.clock,
      serverInfo: options.serverInfo ?? { name: "shuru", version: "0" },
      nextWatchId: () => `w${++watchCounter}`,
      requestShutdown: () => this.#requestShutdown(),
      log,
    };
  }

  /** Resolves when a client asked for `shutdown` (or a `stop_on_close` owner disconnected). */
  get shutdownRequested(): Promise<void> {
    return this.#shutdown;
  }

  /** Sessions currently connected. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Per-session figures (outgoing bytes queued, requests in flight), for logs and tests. */
  sessionStats(): Array<{ queuedBytes: number; inFlight: number; watches: number }> {
    return [...this.#sessions].map((s) => s.stats());
  }

  /** Marks shutdown as requested and asks the backend to stop. */
  async #requestShutdown(): Promise<void> {
    if (this.#shutdownRequested) return;
    this.#shutdownRequested = true;
    try {
      await this.backend.shutdown?.();
    } finally {
      this.#resolveShutdown();
    }
  }

  /**
   * Serves one client over a byte-stream pair; returns its session (await `session.done`).
   * Sends the `ready` notification first, as the reference (the Rust shuru for macOS) does.
   */
  serve(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
  ): ControlSession {
    const conn = new LineConnection(readable, writable, {
      maxLineBytes: this.limits.MAX_LINE_BYTES,
      maxQueuedBytes: this.limits.CLIENT_QUEUE_BYTES,
    });
    const session = new ControlSession(this.#view, conn);
    this.#sessions.add(session);
    void session.done.then(() => this.#sessions.delete(session));
    return session;
  }

  /** Closes every session and kills every process. */
  async close(): Promise<void> {
    await Promise.all([...this.#sessions].map((s) => s.close()));
    await this.processes.killAll();
  }
}
