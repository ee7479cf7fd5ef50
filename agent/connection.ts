/**
 * The host-side `AgentConnection`: runs processes and file operations in a guest through its agent,
 * over one multiplexed connection (see docs/agent_protocol.md). Used by the CLI and the SDK.
 *
 * @module
 */

import {
  type ByteStream,
  Channel,
  type DirEntry,
  type FileInfo,
  type Hello,
  type MountTransport,
  Mux,
  type MuxStream,
  parseDirEntry,
  parseFileInfo,
  parseSizeResult,
  parseWatchEvent,
  readJsonLines,
  type Request,
  type WatchEvent,
} from "../proto/mod.ts";
import { VERSION } from "../host/mod.ts";
import { type PortForward, startForward } from "./forward.ts";
import { AgentProcess, type AgentSpawnOptions, type ExecOutput, execRequest } from "./process.ts";
import { readAll, writeAndClose } from "../io/mod.ts";

/** Options of {@link AgentConnection.connect}. */
export interface AgentConnectOptions {
  /** Aborts the handshake (default: 10 s). */
  signal?: AbortSignal;
  /** Receive window per channel in bytes (see docs/agent_protocol.md). */
  window?: number;
}

/** Options of {@link AgentConnection.exec}. */
export interface AgentExecOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Absolute working directory in the guest. */
  cwd?: string;
  /** Bytes for stdin (then EOF); without it stdin is /dev/null. */
  stdin?: Uint8Array | string | ReadableStream<Uint8Array>;
  /** Run on a PTY of this size. */
  tty?: AgentSpawnOptions["tty"];
  /** Aborting kills the process group. */
  signal?: AbortSignal;
}

/** Options of {@link AgentConnection.writeFile}. */
export interface AgentWriteFileOptions {
  /** Permission bits for a new file. @default 0o644 */
  mode?: number;
  /** Append instead of truncating. */
  append?: boolean;
  /** Fail with AgentAlreadyExistsError if the file exists. */
  createNew?: boolean;
  /** Write at this offset without truncating (exclusive with `append`). */
  offset?: number;
}

/** Options of {@link AgentConnection.watch}. */
export interface WatchOptions {
  /** Watch subdirectories too. @default true */
  recursive?: boolean;
  /** Stops the watch. */
  signal?: AbortSignal;
}

/**
 * A connected guest agent. Create with {@link AgentConnection.connect} or {@link AgentConnection.connectUnix};
 * dispose with `await using` or {@link close}.
 *
 * @example
 * ```ts ignore
 * await using sb = await AgentConnection.connectUnix("/tmp/agent.sock");
 * const { stdout, exitCode } = await sb.exec(["echo", "hi"]);
 * ```
 */
export class AgentConnection implements AsyncDisposable {
  #mux: Mux;
  #forwards = new Set<PortForward>();
  #baseEnv: Record<string, string> = {};

  private constructor(mux: Mux) {
    this.#mux = mux;
  }

  /** Speaks the agent protocol over an already connected byte stream. */
  static async connect(
    transport: ByteStream,
    options: AgentConnectOptions = {},
  ): Promise<AgentConnection> {
    const mux = await Mux.connect(transport, {
      role: "host",
      version: VERSION,
      signal: options.signal ?? AbortSignal.timeout(10_000),
      // The host serves no requests: a guest cannot open streams towards it.
      maxStreams: 0,
      ...(options.window ? { window: options.window } : {}),
    });
    return new AgentConnection(mux);
  }

  /** Connects to an agent listening on a Unix socket. */
  static async connectUnix(
    path: string,
    options: AgentConnectOptions = {},
  ): Promise<AgentConnection> {
    const conn = await Deno.connect({ transport: "unix", path });
    try {
      return await AgentConnection.connect(conn, options);
    } catch (err) {
      try {
        conn.close();
      } catch {
        // Closed by the failed handshake.
      }
      throw err;
    }
  }

  /** The agent's HELLO (version, capabilities). */
  get agent(): Hello {
    return this.#mux.peer;
  }

  /** Resolves when the connection ends, with the error if it broke. */
  get closed(): Promise<Error | undefined> {
    return this.#mux.closed;
  }

  /** Round-trip time to the agent in milliseconds. */
  ping(): Promise<number> {
    return this.#mux.ping();
  }

  // ---------------------------------------------------------------------------- processes

  /**
   * Variables every later process gets (under its own `env`, which wins): shuru sets the
   * secrets' placeholders and CA paths here so each exec and shell sees them.
   */
  setBaseEnv(env: Record<string, string>): void {
    this.#baseEnv = { ...env };
  }

  /** Starts a process; read its output from the returned {@link AgentProcess}. */
  spawn(argv: string[], options: AgentSpawnOptions = {}): AgentProcess {
    const env = { ...this.#baseEnv, ...options.env };
    const stream = this.#open(
      execRequest(argv, Object.keys(env).length > 0 ? { ...options, env } : options),
      options.tty ? [Channel.STDOUT] : [Channel.STDOUT, Channel.STDERR],
    );
    return new AgentProcess(stream, {
      stdinPiped: options.stdin === "piped",
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** Runs a process to completion and returns its collected output and exit status. */
  async exec(argv: string[], options: AgentExecOptions = {}): Promise<ExecOutput> {
    const proc = this.spawn(argv, {
      ...options,
      stdin: options.stdin === undefined ? "null" : "piped",
    });
    const feeding = options.stdin === undefined ? Promise.resolve() : feed(proc, options.stdin);
    const [out] = await Promise.all([proc.output(), feeding]);
    return out;
  }

  // -------------------------------------------------------------------------------- files

  /** Streams a guest file's bytes; errors (AgentNotFoundError, ...) surface on the first read. */
  readFile(path: string, options: { offset?: number; length?: number } = {}): ReadableStream<
    Uint8Array
  > {
    return this.#open({ op: "read_file", path, ...options }).readable;
  }

  /** Reads a whole guest file into memory. */
  readBytes(path: string): Promise<Uint8Array> {
    return readAll(this.readFile(path));
  }

  /** Reads a whole guest file as UTF-8 text. */
  async readText(path: string): Promise<string> {
    return new TextDecoder().decode(await this.readBytes(path));
  }

  /**
   * Writes a guest file from bytes, text or a stream of any size; resolves with the byte count
   * once the agent has written it.
   */
  async writeFile(
    path: string,
    data: Uint8Array | string | ReadableStream<Uint8Array>,
    options: AgentWriteFileOptions = {},
  ): Promise<number> {
    const stream = this.#open({ op: "write_file", path, ...options }, []);
    const sending = writeAndClose(data, stream.writable);
    // An early RESET (e.g. AgentNotFoundError) fails the writes too; report the agent's error.
    const [result] = await Promise.allSettled([stream.result, sending]);
    if (result.status === "rejected") throw result.reason;
    await sending.catch(() => {});
    return parseSizeResult(result.value).size;
  }

  /** Creates a directory. */
  async mkdir(path: string, options: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    await this.#call({ op: "mkdir", path, ...options });
  }

  /** Lists a directory (streamed; any size). */
  async *readDir(path: string): AsyncGenerator<DirEntry> {
    const stream = this.#open({ op: "read_dir", path });
    try {
      for await (const line of readJsonLines(stream.readable)) yield parseDirEntry(line);
      await stream.result;
    } finally {
      stream.reset({ code: "cancelled", message: "Listing no longer needed" });
    }
  }

  /** Stats a path (`lstat: true` does not follow a final symlink). */
  async stat(path: string, options: { lstat?: boolean } = {}): Promise<FileInfo> {
    return parseFileInfo(await this.#call({ op: "stat", path, ...options }));
  }

  /** Removes a file or directory (`recursive` for non-empty directories). */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#call({ op: "remove", path, ...options });
  }

  /** Renames a path. */
  async rename(from: string, to: string): Promise<void> {
    await this.#call({ op: "rename", from, to });
  }

  /** Copies a file (or a tree with `recursive`) inside the guest. */
  async copy(from: string, to: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#call({ op: "copy", from, to, ...options });
  }

  /** Changes permission bits. */
  async chmod(path: string, mode: number): Promise<void> {
    await this.#call({ op: "chmod", path, mode });
  }

  /**
   * Watches a path; yields events until the iteration stops or `signal` aborts. Changes made
   * before the agent installed its watcher may be missed; use {@link watchReady} when they must
   * not be.
   */
  watch(path: string, options: WatchOptions = {}): AsyncGenerator<WatchEvent> {
    return this.#watch(path, options).events;
  }

  /**
   * Like {@link watch}, but resolves once the agent has installed the watcher, so every later
   * change is reported.
   */
  async watchReady(path: string, options: WatchOptions = {}): Promise<AsyncGenerator<WatchEvent>> {
    const { events, ready } = this.#watch(path, options);
    try {
      await ready;
    } catch (err) {
      await events.return(undefined);
      throw err;
    }
    return events;
  }

  #watch(
    path: string,
    options: WatchOptions,
  ): { events: AsyncGenerator<WatchEvent>; ready: Promise<void> } {
    const req: Request = { op: "watch", path };
    if (options.recursive !== undefined) req.recursive = options.recursive;
    const stream = this.#open(req);
    const stop = () => stream.reset({ code: "cancelled", message: "Watch stopped" });
    options.signal?.addEventListener("abort", stop, { once: true });
    const ready = (async () => {
      for await (const m of stream.messages()) if (m.type === "watching") return;
      await stream.result; // ended without "watching": surface the agent's error
    })();
    ready.catch(() => {});
    async function* events(): AsyncGenerator<WatchEvent> {
      try {
        for await (const line of readJsonLines(stream.readable)) yield parseWatchEvent(line);
        if (!options.signal?.aborted) await stream.result;
      } catch (err) {
        if (!options.signal?.aborted) throw err;
      } finally {
        options.signal?.removeEventListener("abort", stop);
        stop();
      }
    }
    return { events: events(), ready };
  }

  // ------------------------------------------------------------------------- net and system

  /**
   * Binds 127.0.0.1:`hostPort` (0 = any free port) and relays every TCP connection to
   * `guestPort` in the guest. Close the returned forward (or this sandbox) to stop.
   */
  async forward(
    hostPort: number,
    guestPort: number,
    options: { guestHost?: string } = {},
  ): Promise<PortForward> {
    const fwd = startForward(
      (req) => this.#open(req),
      { hostPort, guestPort, ...options },
    );
    this.#forwards.add(fwd);
    void fwd.done.finally(() => this.#forwards.delete(fwd));
    return await Promise.resolve(fwd);
  }

  /**
   * Mounts the share `tag` at `path` (ro: under a tmpfs overlay; rw: writes reach the host),
   * on the device the VM backend gave it (`transport`, default 9p).
   */
  async mount(
    tag: string,
    path: string,
    options: { mode?: "ro" | "rw"; transport?: MountTransport } = {},
  ): Promise<void> {
    await this.#call({
      op: "mount",
      tag,
      path,
      mode: options.mode ?? "ro",
      ...(options.transport ? { transport: options.transport } : {}),
    });
  }

  /** Asks the agent to sync and power the guest off. */
  async shutdown(): Promise<void> {
    await this.#call({ op: "shutdown" });
  }

  /** Stops forwards and closes the connection. */
  async close(): Promise<void> {
    for (const f of [...this.#forwards]) await f.close();
    await this.#mux.close();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ----------------------------------------------------------------------------- internals

  /** Opens a stream; `reads` = the channels we read (others are dropped, bounding memory). */
  #open(request: Request, reads: number[] = [Channel.MAIN]): MuxStream {
    return this.#mux.open(request as unknown as Record<string, unknown>, { reads });
  }

  #call(request: Request): Promise<Record<string, unknown>> {
    return this.#open(request, []).result;
  }
}

async function feed(
  proc: AgentProcess,
  input: Uint8Array | string | ReadableStream<Uint8Array>,
): Promise<void> {
  try {
    await writeAndClose(input, proc.stdin);
  } catch {
    // The process exited before reading all its input (like EPIPE); its status says enough.
  }
}
