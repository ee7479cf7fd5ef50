/**
 * Kept processes: processes that outlive the agent session that started them (exec with
 * `keep`). A memory snapshot is taken with no host attached (docs/snapshots.md), and a guest
 * restored from it meets a new host, so a sandbox's processes must survive the end of one
 * session and be found again by the next:
 *
 * - The agent reads a kept process's output all the time, into a bounded buffer (the newest
 *   {@linkcode KEPT_OUTPUT_BYTES}), counting the bytes each stream produced. While a session is
 *   attached, each chunk is also sent to it, and the next read waits for that send: the host's
 *   flow control still slows the process, as for any exec. Detached, the process runs freely and
 *   only the newest output is kept.
 * - `attach {id, stdout, stderr}` replays the buffer from the byte offsets the host already has,
 *   then goes live; stdin, signals and resizes flow again; CLOSE reports the exit. A process that
 *   exited while detached is kept (at most {@linkcode KEPT_EXITED_MAX}) until a session has been
 *   told its exit.
 * - Ending a session (detach or a lost host) only drops the attachment.
 *
 * @module
 */

import type { ExecExit, KeptProcessInfo, MuxStream } from "../proto/mod.ts";
import type { GuestProcess } from "./process.ts";

/** Output bytes kept per process while no host reads them (both streams together). */
export const KEPT_OUTPUT_BYTES = 1024 * 1024;

/** Exited kept processes remembered until a host hears of their exit. */
export const KEPT_EXITED_MAX = 64;

/** Stream index: 0 = stdout (channel 1), 1 = stderr (channel 2). */
type OutIndex = 0 | 1;

interface LogEntry {
  stream: OutIndex;
  /** Offset of `data` in its stream. */
  start: number;
  data: Uint8Array;
}

/** The newest output of one process, with byte offsets per stream. */
export class OutputLog {
  /** Bytes each stream has produced in total. */
  readonly produced: [number, number] = [0, 0];
  readonly #max: number;
  #entries: LogEntry[] = [];
  #bytes = 0;

  constructor(maxBytes = KEPT_OUTPUT_BYTES) {
    this.#max = maxBytes;
  }

  /** Appends a chunk of stream `stream`. */
  push(stream: OutIndex, data: Uint8Array): void {
    this.#entries.push({ stream, start: this.produced[stream], data });
    this.produced[stream] += data.length;
    this.#bytes += data.length;
    while (this.#bytes > this.#max && this.#entries.length > 1) {
      this.#bytes -= this.#entries.shift()!.data.length;
    }
  }

  /** The chunks after byte `since[s]` of each stream, in the order they were produced. */
  since(since: [number, number]): { stream: OutIndex; data: Uint8Array }[] {
    const out: { stream: OutIndex; data: Uint8Array }[] = [];
    for (const e of this.#entries) {
      const from = since[e.stream];
      const end = e.start + e.data.length;
      if (end <= from) continue;
      out.push({
        stream: e.stream,
        data: from > e.start ? e.data.subarray(from - e.start) : e.data,
      });
    }
    return out;
  }
}

/**
 * One session's view of a kept process: the exec (or attach) stream its output goes to, in
 * order, one write at a time.
 */
class Attachment {
  readonly stream: MuxStream;
  #chain: Promise<void> = Promise.resolve();
  #live = true;

  constructor(stream: MuxStream) {
    this.stream = stream;
  }

  get live(): boolean {
    return this.#live && !this.stream.finished;
  }

  /** Queues `data` on the stream's channel for `index`; resolves when written (or dropped). */
  send(index: OutIndex, data: Uint8Array): Promise<void> {
    const channel = this.stream.channel(index + 1);
    this.#chain = this.#chain.then(async () => {
      if (!this.live) return;
      await channel.write(data).catch(() => {});
    });
    return this.#chain;
  }

  /** After what is queued: FIN on the output channels and CLOSE with `exit`. */
  finish(exit: ExecExit, tty: boolean): Promise<boolean> {
    const done = this.#chain.then(async () => {
      if (!this.live) return false;
      try {
        await this.stream.channel(1).closeWrite();
        if (!tty) await this.stream.channel(2).closeWrite();
        await this.stream.close({ ...exit });
        return true;
      } catch {
        return false;
      }
    });
    this.#chain = done.then(() => {});
    return done;
  }

  /** Stops sending (the session ended or another one attached). */
  drop(): void {
    this.#live = false;
  }
}

/** A process kept across sessions. */
export class KeptProcess {
  /** The agent's id. */
  readonly id: string;
  /** The host's label. */
  readonly label: string | undefined;
  /** Program and arguments. */
  readonly argv: string[];
  /** Runs on a PTY. */
  readonly tty: boolean;
  /** Its stdin is piped. */
  readonly stdinPiped: boolean;
  /** The process. */
  readonly process: GuestProcess;
  /** Its newest output. */
  readonly log = new OutputLog();
  /** Set once it exited and its output ended. */
  exit: ExecExit | null = null;
  readonly #registry: KeptProcesses;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stdinClosed = false;
  #attachment: Attachment | null = null;
  #reported = false;

  /** @internal Use {@linkcode KeptProcesses.add}. */
  constructor(
    registry: KeptProcesses,
    init: {
      id: string;
      label?: string;
      argv: string[];
      tty: boolean;
      stdinPiped: boolean;
      process: GuestProcess;
    },
  ) {
    this.#registry = registry;
    this.id = init.id;
    this.label = init.label;
    this.argv = init.argv;
    this.tty = init.tty;
    this.stdinPiped = init.stdinPiped;
    this.process = init.process;
    this.#stdin = init.process.stdin.getWriter();
    const pumps = [this.#pump(init.process.stdout, 0)];
    if (init.process.stderr) pumps.push(this.#pump(init.process.stderr, 1));
    void this.#finishWhenDone(pumps);
  }

  async #finishWhenDone(pumps: Promise<void>[]): Promise<void> {
    const status = await this.process.status;
    await Promise.all(pumps);
    this.exit = status.signal === null
      ? { exitCode: status.code }
      : { exitCode: status.code, signal: status.signal };
    this.#stdin.close().catch(() => {});
    const att = this.#attachment;
    if (att?.live && await att.finish(this.exit, this.tty)) this.#reported = true;
    this.#registry.exited(this);
  }

  /** True once a session was told of its exit. */
  get reported(): boolean {
    return this.#reported;
  }

  /** What `processes` lists. */
  info(): KeptProcessInfo {
    const info: KeptProcessInfo = {
      id: this.id,
      argv: this.argv,
      pid: this.process.pid,
      tty: this.tty,
      stdin: this.stdinPiped,
      running: this.exit === null,
      stdoutBytes: this.log.produced[0],
      stderrBytes: this.log.produced[1],
    };
    if (this.label !== undefined) info.label = this.label;
    if (this.exit) info.exit = this.exit;
    return info;
  }

  async #pump(source: ReadableStream<Uint8Array>, index: OutIndex): Promise<void> {
    const reader = source.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        if (value.length === 0) continue;
        this.log.push(index, value);
        const att = this.#attachment;
        // Attached: the next read waits for this write (the host's flow control applies).
        if (att?.live) await att.send(index, value);
      }
    } catch {
      // The process's end of the pipe broke; its status reports the exit.
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * Makes `stream` (an exec or attach stream) this process's attachment: replays the output
   * after `since`, then sends live output, takes stdin, signals and resizes, and sends CLOSE
   * once it exits. Resolves when the attachment ends (exit reported, stream gone, or replaced).
   */
  attach(stream: MuxStream, since: [number, number], log: (line: string) => void): Promise<void> {
    this.#attachment?.drop();
    const att = new Attachment(stream);
    this.#attachment = att;
    // Synchronously: every chunk read from now on is queued after this replay.
    for (const c of this.log.since(since)) void att.send(c.stream, c.data);
    void stream.send({ type: "started", pid: this.process.pid, id: this.id }).catch(() => {});
    stream.onMessage((raw) => {
      const type = raw.type;
      try {
        if (type === "resize" && typeof raw.rows === "number" && typeof raw.cols === "number") {
          this.process.resize({ rows: raw.rows, cols: raw.cols });
        } else if (type === "signal" && typeof raw.signal === "string") {
          this.process.kill(raw.signal);
        }
      } catch (e) {
        log(`ignored message for kept process ${this.id}: ${(e as Error).message}`);
      }
    });
    void this.#feedStdin(att);
    const ended = new Promise<void>((resolve) => {
      if (stream.signal.aborted) return resolve();
      stream.signal.addEventListener("abort", () => resolve(), { once: true });
      void stream.result.then(() => resolve(), () => resolve());
    });
    if (this.exit) {
      void att.finish(this.exit, this.tty).then((ok) => {
        if (ok) {
          this.#reported = true;
          this.#registry.exited(this);
        }
      });
    }
    return ended.then(() => {
      att.drop();
      if (this.#attachment === att) this.#attachment = null;
    });
  }

  async #feedStdin(att: Attachment): Promise<void> {
    const reader = att.stream.channel(0).readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          // FIN from the host: EOF for the process (once; a later attach finds it closed).
          if (att.live && !this.#stdinClosed) {
            this.#stdinClosed = true;
            await this.#stdin.close().catch(() => {});
          }
          return;
        }
        if (!att.live || this.#stdinClosed) continue;
        await this.#stdin.write(value).catch(() => {});
      }
    } catch {
      // The stream was reset or the session ended: the process keeps its stdin open.
    } finally {
      reader.releaseLock();
    }
  }
}

/** The agent's kept processes (one registry per agent, shared by its sessions). */
export class KeptProcesses {
  readonly #byId = new Map<string, KeptProcess>();
  readonly #exitedOrder: string[] = [];
  #next = 1;

  /** Registers a started process. */
  add(init: {
    label?: string;
    argv: string[];
    tty: boolean;
    stdinPiped: boolean;
    process: GuestProcess;
  }): KeptProcess {
    const id = `k${this.#next++}`;
    const kp = new KeptProcess(this, { id, ...init });
    this.#byId.set(id, kp);
    return kp;
  }

  /** The process with `id`, if kept. */
  get(id: string): KeptProcess | undefined {
    return this.#byId.get(id);
  }

  /** Every kept process, oldest first. */
  list(): KeptProcess[] {
    return [...this.#byId.values()];
  }

  /** Kept processes that still run. */
  get running(): number {
    let n = 0;
    for (const kp of this.#byId.values()) if (!kp.exit) n++;
    return n;
  }

  /** @internal A process exited (or its exit was reported). */
  exited(kp: KeptProcess): void {
    if (kp.reported) {
      this.#byId.delete(kp.id);
      const i = this.#exitedOrder.indexOf(kp.id);
      if (i >= 0) this.#exitedOrder.splice(i, 1);
      return;
    }
    if (!this.#exitedOrder.includes(kp.id)) this.#exitedOrder.push(kp.id);
    while (this.#exitedOrder.length > KEPT_EXITED_MAX) {
      this.#byId.delete(this.#exitedOrder.shift()!);
    }
  }
}
