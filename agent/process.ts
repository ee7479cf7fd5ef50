/**
 * A process running in the sandbox, seen from the host: one exec stream of the agent protocol
 * (channel 0 stdin, 1 stdout, 2 stderr; MESSAGE for started/resize/signal; CLOSE = exit).
 *
 * @module
 */

import { readAll } from "../io/mod.ts";
import {
  Channel,
  type ExecRequest,
  type MuxStream,
  parseExecExit,
  parseExecMessage,
} from "../proto/mod.ts";

/** How a process ended. */
export interface ExitStatus {
  /** Exit code; 128+N if killed by signal N; 127 if the program was not found. */
  exitCode: number;
  /** True when exitCode is 0. */
  success: boolean;
  /** Name of the signal that killed it, if any. */
  signal?: string;
}

/** Collected output of a finished process. */
export interface ExecOutput extends ExitStatus {
  /** Everything the process wrote to stdout (the terminal output with `tty`). */
  stdout: Uint8Array;
  /** Everything it wrote to stderr (empty with `tty`). */
  stderr: Uint8Array;
}

/** Terminal settings for a process on a PTY. */
export interface TtyOptions {
  /** Height of the terminal in character cells. */
  rows: number;
  /** Width of the terminal in character cells. */
  cols: number;
  /** TERM. @default "xterm-256color" */
  term?: string;
}

/** Options for starting a process. */
export interface AgentSpawnOptions {
  /** Extra environment variables (merged over the agent's). */
  env?: Record<string, string>;
  /** Absolute working directory in the guest. */
  cwd?: string;
  /** "piped": write to {@link AgentProcess.stdin}; "null": /dev/null. @default "null" */
  stdin?: "piped" | "null";
  /** Run on a PTY of this size (stdout carries the terminal, stderr is empty). */
  tty?: TtyOptions;
  /** Aborting kills the process group (SIGKILL) and fails `wait()`. */
  signal?: AbortSignal;
}

/** A running process; create with `AgentConnection.spawn`. */
export class AgentProcess {
  /** Bytes the process writes to stdout (terminal output with `tty`). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Bytes the process writes to stderr (never any with `tty`). */
  readonly stderr: ReadableStream<Uint8Array>;
  #stream: MuxStream;
  #stdinPiped: boolean;
  #pid: Promise<number>;
  #status: Promise<ExitStatus>;

  /** @internal Use `AgentConnection.spawn`. */
  constructor(stream: MuxStream, options: { stdinPiped: boolean; signal?: AbortSignal }) {
    this.#stream = stream;
    this.#stdinPiped = options.stdinPiped;
    this.stdout = stream.channel(Channel.STDOUT).readable;
    this.stderr = stream.channel(Channel.STDERR).readable;
    const pid = Promise.withResolvers<number>();
    this.#pid = pid.promise;
    this.#pid.catch(() => {});
    void (async () => {
      for await (const raw of stream.messages()) {
        try {
          const m = parseExecMessage(raw);
          if (m.type === "started") pid.resolve(m.pid);
        } catch {
          // An unknown message from a newer agent: ignore it.
        }
      }
      pid.reject(new Error("Cannot get pid: the process ended before it started"));
    })();
    this.#status = stream.result.then((r) => {
      const res = parseExecExit(r);
      const status: ExitStatus = { exitCode: res.exitCode, success: res.exitCode === 0 };
      if (res.signal) status.signal = res.signal;
      return status;
    });
    this.#status.catch(() => {});
    const signal = options.signal;
    if (signal) {
      const onAbort = () =>
        stream.reset({ code: "cancelled", message: `Process aborted: ${signal.reason}` });
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        void this.#status.finally(() => signal.removeEventListener("abort", onAbort)).catch(
          () => {},
        );
      }
    }
  }

  /** Bytes to the process's stdin (terminal input with `tty`); close() sends EOF. */
  get stdin(): WritableStream<Uint8Array> {
    if (!this.#stdinPiped) {
      throw new TypeError('Cannot write to stdin: spawn the process with stdin: "piped"');
    }
    return this.#stream.channel(Channel.STDIN).writable;
  }

  /** The guest pid (also its process group id), once the agent reported the start. */
  get pid(): Promise<number> {
    return this.#pid;
  }

  /** Waits for the process to end. */
  wait(): Promise<ExitStatus> {
    return this.#status;
  }

  /** Sends a signal to the process group. No-op once the process has ended. */
  async kill(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (this.#stream.finished) return;
    await this.#stream.send({ type: "signal", signal });
  }

  /** Resizes the PTY (only meaningful with `tty`). */
  async resize(rows: number, cols: number): Promise<void> {
    if (this.#stream.finished) return;
    await this.#stream.send({ type: "resize", rows, cols });
  }

  /** Reads stdout and stderr to the end and waits for the exit status. */
  async output(): Promise<ExecOutput> {
    const [stdout, stderr, status] = await Promise.all([
      readAll(this.stdout),
      readAll(this.stderr),
      this.#status,
    ]);
    return { ...status, stdout, stderr };
  }
}

/** Builds the exec request for `argv` and options. */
export function execRequest(argv: string[], options: AgentSpawnOptions): ExecRequest {
  if (argv.length === 0) throw new TypeError("Cannot run a process: argv is empty");
  const req: ExecRequest = { op: "exec", argv };
  if (options.env) req.env = options.env;
  if (options.cwd) req.cwd = options.cwd;
  // Always explicit: the agent's own TERM (if any) must not leak into the PTY.
  if (options.tty) req.tty = { ...options.tty, term: options.tty.term ?? "xterm-256color" };
  if (options.stdin === "piped") req.stdin = true;
  return req;
}
