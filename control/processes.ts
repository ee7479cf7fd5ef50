/**
 * The process table shared by every client of one sandbox: pids ("p1", "p2"... as the reference,
 * the Rust shuru for macOS this project re-creates, numbers them),
 * one record per process holding its backend handle, output ring, subscribers and exit.
 *
 * Output is pumped from the backend streams into the ring and to subscribers; the pump waits for
 * every subscriber's queue to drain below its cap, so a slow client slows the process (through
 * the agent's flow control) instead of growing memory.
 *
 * @module
 */

import type {
  AdoptedProcess,
  BackendExit,
  BackendProcess,
  BackendSpawnOptions,
  ControlBackend,
} from "./backend.ts";
import type { Clock } from "./clock.ts";
import { serverError, toRpcError } from "./errors.ts";
import { type OutputChunk, OutputRing } from "./ring.ts";

/** Receives a process's output and exit (a client session). */
export interface OutputSubscriber {
  /** A chunk of output. */
  onOutput(pid: string, chunk: OutputChunk): void;
  /** The process ended (after its last output). */
  onExit(pid: string, exit: ProcessExit): void;
  /** Resolves when the subscriber can take more. */
  ready(): Promise<void>;
}

/** How a process ended, as the protocol reports it. */
export interface ProcessExit extends BackendExit {
  /** Set when the backend lost the process (connection to the agent gone). */
  error?: string;
}

/** What started a process. */
export type ProcessKind = "spawn" | "exec";

/** One process. */
export class ProcessRecord {
  /** Protocol pid ("p1"). */
  readonly pid: string;
  /** The command and its arguments, as started. */
  readonly argv: string[];
  /** exec or spawn. */
  readonly kind: ProcessKind;
  /** Start time (ms since epoch, from the server's clock). */
  readonly startedAt: number;
  /** The backend handle. */
  readonly process: BackendProcess;
  /** Recent output for attach. */
  readonly ring: OutputRing;
  /** Sessions receiving output notifications. */
  readonly subscribers = new Set<OutputSubscriber>();
  /** In-process listeners (exec collects output through one). */
  readonly listeners = new Set<(chunk: OutputChunk) => void>();
  /** Set once exited. */
  exit: ProcessExit | null = null;
  /** End time, once exited. */
  endedAt: number | null = null;
  /** Resolves with the exit once output is drained and the process has ended. */
  readonly done: Promise<ProcessExit>;
  #resolveDone!: (e: ProcessExit) => void;
  #started = false;
  readonly #clock: Clock;

  constructor(
    pid: string,
    argv: string[],
    kind: ProcessKind,
    process: BackendProcess,
    options: { ringBytes: number; clock: Clock },
  ) {
    this.pid = pid;
    this.argv = argv;
    this.kind = kind;
    this.process = process;
    this.#clock = options.clock;
    this.startedAt = options.clock.now();
    this.ring = new OutputRing(options.ringBytes);
    this.done = new Promise((r) => (this.#resolveDone = r));
  }

  /** Starts pumping output (called after the reply that names the pid is queued). */
  begin(onEnd: (rec: ProcessRecord) => void): void {
    if (this.#started) return;
    this.#started = true;
    const pumps = [this.#pump("stdout", this.process.stdout)];
    if (this.process.stderr) pumps.push(this.#pump("stderr", this.process.stderr));
    void (async () => {
      await Promise.all(pumps);
      let exit: ProcessExit;
      try {
        exit = await this.process.status;
      } catch (err) {
        exit = { code: -1, signal: null, error: err instanceof Error ? err.message : String(err) };
      }
      this.exit = exit;
      this.endedAt = this.#clock.now();
      for (const s of this.subscribers) s.onExit(this.pid, exit);
      this.subscribers.clear();
      this.listeners.clear();
      onEnd(this);
      this.#resolveDone(exit);
    })();
  }

  async #pump(stream: "stdout" | "stderr", readable: ReadableStream<Uint8Array>): Promise<void> {
    const reader = readable.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        if (value.length === 0) continue;
        const chunk = this.ring.push(stream, value);
        for (const l of this.listeners) l(chunk);
        if (this.subscribers.size === 0) continue;
        for (const s of this.subscribers) s.onOutput(this.pid, chunk);
        await Promise.all([...this.subscribers].map((s) => s.ready()));
      }
    } catch {
      // The stream broke (agent gone); the status promise reports it.
    } finally {
      reader.releaseLock();
    }
  }
}

/** Options of {@linkcode ProcessTable}. */
export interface ProcessTableOptions {
  /** Output bytes kept per process. */
  ringBytes: number;
  /** Exited processes remembered. */
  maxExited: number;
  /** Output bytes kept in total for exited processes. */
  maxExitedBytes: number;
  /** Live processes allowed. */
  maxLive: number;
  /** Time source. */
  clock: Clock;
}

/** All processes of one sandbox. */
export class ProcessTable {
  readonly #backend: ControlBackend;
  readonly #options: ProcessTableOptions;
  readonly #records = new Map<string, ProcessRecord>();
  readonly #exitedOrder: string[] = [];
  #exitedBytes = 0;
  #counter = 0;
  #live = 0;

  constructor(backend: ControlBackend, options: ProcessTableOptions) {
    this.#backend = backend;
    this.#options = options;
  }

  /** Starts a process; its output flows once {@linkcode ProcessRecord.begin} is called. */
  async start(
    argv: string[],
    options: BackendSpawnOptions,
    kind: ProcessKind,
  ): Promise<ProcessRecord> {
    if (this.#live >= this.#options.maxLive) {
      throw serverError(
        "TOO_MANY",
        `Cannot start ${argv[0]}: ${this.#live} processes are running (the limit)`,
      );
    }
    this.#live++;
    const pid = `p${++this.#counter}`;
    let proc: BackendProcess;
    try {
      proc = await this.#backend.spawn(argv, { ...options, label: pid });
    } catch (err) {
      this.#live--;
      throw toRpcError(err, `start ${argv[0]}`);
    }
    const rec = new ProcessRecord(pid, argv, kind, proc, {
      ringBytes: this.#options.ringBytes,
      clock: this.#options.clock,
    });
    this.#records.set(pid, rec);
    return rec;
  }

  /**
   * Takes in processes already running (a sandbox resumed from a memory checkpoint): each keeps
   * the pid it had (a fresh one if it had none or it is taken) and its output flows at once
   * (the backend replays what it buffered).
   */
  adopt(found: AdoptedProcess[]): ProcessRecord[] {
    const out: ProcessRecord[] = [];
    for (const a of found) {
      const m = /^p(\d+)$/.exec(a.label ?? "");
      let pid = m && !this.#records.has(a.label!) ? a.label! : `p${++this.#counter}`;
      if (m) this.#counter = Math.max(this.#counter, Number(m[1]));
      if (this.#records.has(pid)) pid = `p${++this.#counter}`;
      const rec = new ProcessRecord(pid, a.argv, "spawn", a.process, {
        ringBytes: this.#options.ringBytes,
        clock: this.#options.clock,
      });
      this.#records.set(pid, rec);
      this.#live++;
      rec.begin(this.retire);
      out.push(rec);
    }
    return out;
  }

  /** Called by a record when it ends. */
  readonly retire = (rec: ProcessRecord): void => {
    this.#live--;
    this.#exitedOrder.push(rec.pid);
    this.#exitedBytes += rec.ring.bytes;
    while (
      this.#exitedOrder.length > this.#options.maxExited ||
      (this.#exitedBytes > this.#options.maxExitedBytes && this.#exitedOrder.length > 1)
    ) {
      const pid = this.#exitedOrder.shift()!;
      this.#exitedBytes -= this.#records.get(pid)?.ring.bytes ?? 0;
      this.#records.delete(pid);
    }
  };

  /** The record of `pid`, or a NO_SUCH_PROCESS error. */
  get(pid: string): ProcessRecord {
    const rec = this.#records.get(pid);
    if (!rec) throw serverError("NO_SUCH_PROCESS", `Cannot find process ${pid}: no such pid`);
    return rec;
  }

  /** The record of a running `pid`, or NO_SUCH_PROCESS / PROCESS_EXITED. */
  getRunning(pid: string, action: string): ProcessRecord {
    const rec = this.get(pid);
    if (rec.exit) {
      throw serverError(
        "PROCESS_EXITED",
        `Cannot ${action} process ${pid}: it exited with code ${rec.exit.code}`,
      );
    }
    return rec;
  }

  /** Every remembered process, oldest first. */
  list(): ProcessRecord[] {
    return [...this.#records.values()];
  }

  /** Running processes. */
  get liveCount(): number {
    return this.#live;
  }

  /** Removes a subscriber from every process (its session closed). */
  unsubscribeAll(sub: OutputSubscriber): void {
    for (const rec of this.#records.values()) rec.subscribers.delete(sub);
  }

  /** Kills every running process (server shutdown). */
  async killAll(): Promise<void> {
    await Promise.all(
      this.list().filter((r) => !r.exit).map((r) => r.process.kill("SIGKILL").catch(() => {})),
    );
  }
}
