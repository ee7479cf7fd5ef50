/**
 * A process running in the sandbox, seen from the host: one exec stream of the agent protocol
 * (channel 0 stdin, 1 stdout, 2 stderr; MESSAGE for started/resize/signal; CLOSE = exit).
 *
 * A kept process ({@linkcode KeptAgentProcess}, exec with `keep`) outlives the connection: its
 * streams, exit and pid are this object's own, fed by whichever exec or attach stream currently
 * carries it. When the connection is detached on purpose (a memory snapshot), the streams pause;
 * {@linkcode KeptAgentProcess.rebind} continues them over an attach stream of the next
 * connection, from the byte offsets already delivered, so a reader sees one unbroken stream.
 *
 * @module
 */

import { readAll } from "../io/mod.ts";
import {
  type AttachRequest,
  Channel,
  ConnectionError,
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
  /**
   * Keep the process when the connection ends (see {@linkcode KeptAgentProcess}): it survives
   * a detach (a memory snapshot) and a later connection can attach to it. Not with `signal`.
   */
  keep?: boolean;
  /** With `keep`: a name for the process the agent lists back (the control protocol's pid). */
  label?: string;
}

/** A process in the guest; create with `AgentConnection.spawn`. */
export interface AgentProcess {
  /** Bytes the process writes to stdout (terminal output with `tty`). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Bytes the process writes to stderr (never any with `tty`). */
  readonly stderr: ReadableStream<Uint8Array>;
  /** Bytes to the process's stdin (terminal input with `tty`); close() sends EOF. */
  readonly stdin: WritableStream<Uint8Array>;
  /** The guest pid (also its process group id), once the agent reported the start. */
  readonly pid: Promise<number>;
  /** Waits for the process to end. */
  wait(): Promise<ExitStatus>;
  /** Sends a signal to the process group. No-op once the process has ended. */
  kill(signal?: Deno.Signal): Promise<void>;
  /** Resizes the PTY (only meaningful with `tty`). */
  resize(rows: number, cols: number): Promise<void>;
  /** Reads stdout and stderr to the end and waits for the exit status. */
  output(): Promise<ExecOutput>;
}

/** A process whose life is one exec stream; create with `AgentConnection.spawn`. */
export class ExecProcess implements AgentProcess {
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
  if (options.keep) req.keep = true;
  if (options.keep && options.label !== undefined) req.label = options.label;
  return req;
}

function exitStatusOf(r: Record<string, unknown>): ExitStatus {
  const res = parseExecExit(r);
  const status: ExitStatus = { exitCode: res.exitCode, success: res.exitCode === 0 };
  if (res.signal) status.signal = res.signal;
  return status;
}

/** What a kept process's attach request says the host already has. */
export function attachRequest(id: string, delivered: [number, number]): AttachRequest {
  return { op: "attach", id, stdout: delivered[0], stderr: delivered[1] };
}

/** One output stream of a kept process: ours, fed from successive channels. */
class KeptOutput {
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes passed on (the agent replays from here after a rebind). */
  delivered = 0;
  readonly #writable: WritableStream<Uint8Array>;
  #closed = false;
  /** The pipe in progress (settled when none). */
  #feeding: Promise<boolean> = Promise.resolve(true);

  constructor() {
    const counting = new TransformStream<Uint8Array, Uint8Array>({
      transform: (chunk, controller) => {
        this.delivered += chunk.length;
        controller.enqueue(chunk);
      },
    });
    this.readable = counting.readable;
    this.#writable = counting.writable;
  }

  /** Pipes `source` in; resolves true at its end (FIN), false when it broke. */
  feed(source: ReadableStream<Uint8Array>): Promise<boolean> {
    if (this.#closed) return source.cancel().then(() => true, () => true);
    const fed = source.pipeTo(this.#writable, { preventClose: true, preventAbort: true })
      .then(() => true, () => false);
    this.#feeding = fed;
    return fed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // After the pipe let go of the writable (a locked one refuses to close).
    void this.#feeding.then(() => this.#writable.close().catch(() => {}));
  }

  fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    // After the pipe let go of the writable (a locked one refuses the abort, and the reader
    // would wait forever).
    void this.#feeding.then(() => this.#writable.abort(err).catch(() => {}));
  }
}

/**
 * A kept process (exec with `keep`): see the module doc. `AgentConnection` rebinds it to a new
 * stream after a detach, or creates one for a process it finds kept (`attach`).
 */
export class KeptAgentProcess implements AgentProcess {
  /** The host's label given at exec (or listed by the agent). */
  readonly label: string | undefined;
  /** Runs on a PTY. */
  readonly tty: boolean;
  readonly #out = new KeptOutput();
  readonly #err = new KeptOutput();
  readonly #stdinPiped: boolean;
  #stdin: WritableStream<Uint8Array> | undefined;
  #stream!: MuxStream;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #writerOf: MuxStream | undefined;
  #id = Promise.withResolvers<string>();
  #knownId: string | undefined;
  #pid = Promise.withResolvers<number>();
  #status = Promise.withResolvers<ExitStatus>();
  #ended = false;
  #paused: PromiseWithResolvers<void> | undefined;

  /** @internal Use `AgentConnection.spawn` or `AgentConnection.attach`. */
  constructor(
    stream: MuxStream,
    options: { stdinPiped: boolean; tty: boolean; label?: string; id?: string },
  ) {
    this.#stdinPiped = options.stdinPiped;
    this.tty = options.tty;
    this.label = options.label;
    if (options.id !== undefined) {
      this.#knownId = options.id;
      this.#id.resolve(options.id);
    }
    this.#id.promise.catch(() => {});
    this.#pid.promise.catch(() => {});
    this.#status.promise.catch(() => {});
    this.#bind(stream);
  }

  /** The agent's id of the process (for `attach`), once it started. */
  get id(): Promise<string> {
    return this.#id.promise;
  }

  /** The agent's id once known (undefined: not started yet, or the agent does not keep it). */
  get knownId(): string | undefined {
    return this.#knownId;
  }

  /** True once it exited (or was lost for good). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Bytes of stdout and stderr delivered so far. */
  get delivered(): [number, number] {
    return [this.#out.delivered, this.#err.delivered];
  }

  get stdout(): ReadableStream<Uint8Array> {
    return this.#out.readable;
  }

  get stderr(): ReadableStream<Uint8Array> {
    return this.#err.readable;
  }

  get stdin(): WritableStream<Uint8Array> {
    if (!this.#stdinPiped) {
      throw new TypeError('Cannot write to stdin: spawn the process with stdin: "piped"');
    }
    this.#stdin ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.#retrying((st) => this.#stdinWriter(st).write(chunk)),
      close: () => this.#retrying((st) => this.#stdinWriter(st).close()),
    });
    return this.#stdin;
  }

  get pid(): Promise<number> {
    return this.#pid.promise;
  }

  wait(): Promise<ExitStatus> {
    return this.#status.promise;
  }

  async kill(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (this.#ended) return;
    await this.#retrying((st) => st.send({ type: "signal", signal }));
  }

  async resize(rows: number, cols: number): Promise<void> {
    if (this.#ended) return;
    await this.#retrying((st) => st.send({ type: "resize", rows, cols }));
  }

  async output(): Promise<ExecOutput> {
    const [stdout, stderr, status] = await Promise.all([
      readAll(this.stdout),
      readAll(this.stderr),
      this.#status.promise,
    ]);
    return { ...status, stdout, stderr };
  }

  /** @internal The connection is about to be detached: breaks of the stream are not exits. */
  pause(): void {
    if (this.#ended || this.#paused) return;
    this.#paused = Promise.withResolvers<void>();
    this.#paused.promise.catch(() => {});
  }

  /** @internal The detach did not happen after all. */
  unpause(): void {
    this.#paused?.resolve();
    this.#paused = undefined;
  }

  /** @internal Continues over `stream` (an attach stream of the new connection). */
  rebind(stream: MuxStream): void {
    this.#bind(stream);
    this.unpause();
  }

  /** @internal The connection is gone for good. */
  fail(err: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#out.fail(err);
    this.#err.fail(err);
    this.#pid.reject(err);
    this.#id.reject(err);
    this.#status.reject(err);
    this.#paused?.reject(err);
  }

  #bind(stream: MuxStream): void {
    this.#stream = stream;
    void (async () => {
      for await (const raw of stream.messages()) {
        try {
          const m = parseExecMessage(raw);
          if (m.type === "started") {
            this.#pid.resolve(m.pid);
            if (m.id !== undefined) {
              this.#knownId = m.id;
              this.#id.resolve(m.id);
            }
          }
        } catch {
          // An unknown message from a newer agent: ignore it.
        }
      }
    })().catch(() => {
      // The stream broke: `stream.result` below reports it (a failure, or a detach).
    });
    const outputs = [this.#out.feed(stream.channel(Channel.STDOUT).readable)];
    if (!this.tty) outputs.push(this.#err.feed(stream.channel(Channel.STDERR).readable));
    else this.#err.close();
    void stream.result.then(
      async (r) => {
        await Promise.all(outputs);
        this.#out.close();
        this.#err.close();
        this.#ended = true;
        try {
          this.#status.resolve(exitStatusOf(r));
        } catch (err) {
          this.#status.reject(err);
        }
        this.#pid.reject(new Error("Cannot get pid: the process ended before it started"));
        this.#id.reject(new Error("Cannot get the process id: it ended"));
      },
      (err) => {
        if (this.#stream !== stream) return;
        // Detached on purpose: wait for the next stream.
        if (this.#paused && err instanceof ConnectionError && err.code === "detached") return;
        this.fail(err);
      },
    );
  }

  /** Runs `fn` on the current stream, again on the next one when a detach broke it. */
  async #retrying<T>(fn: (stream: MuxStream) => Promise<T>): Promise<T> {
    for (;;) {
      if (this.#ended) throw new TypeError("Cannot use the process: it has ended");
      await this.#paused?.promise;
      const stream = this.#stream;
      try {
        return await fn(stream);
      } catch (err) {
        if (this.#stream !== stream || this.#paused) continue;
        throw err;
      }
    }
  }

  #stdinWriter(stream: MuxStream): WritableStreamDefaultWriter<Uint8Array> {
    if (this.#writerOf !== stream) {
      this.#writer = stream.channel(Channel.STDIN).writable.getWriter();
      this.#writer.closed.catch(() => {});
      this.#writerOf = stream;
    }
    return this.#writer!;
  }
}
