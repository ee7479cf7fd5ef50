/**
 * The host-side `AgentConnection`: runs processes and file operations in a guest through its agent,
 * over one multiplexed connection (see docs/agent_protocol.md). Used by the CLI and the SDK.
 *
 * The connection can be detached and continued ({@linkcode AgentConnection.detach},
 * {@linkcode AgentConnection.reattach}): a memory snapshot is taken with no host on the agent
 * channel, then the same object goes on over a new connection, its kept processes continuing
 * where they were. `closed` resolves only when the connection ends for good.
 *
 * @module
 */

import {
  type ByteStream,
  Channel,
  ConnectionError,
  type DirEntry,
  type FileInfo,
  type Hello,
  type IdentityResult,
  type KeptProcessInfo,
  type MountTransport,
  Mux,
  type MuxStream,
  parseDirEntry,
  parseFileInfo,
  parseIdentityResult,
  parseProcessesResult,
  parseSizeResult,
  parseWatchEvent,
  readJsonLines,
  type Request,
  type WatchEvent,
} from "../proto/mod.ts";
import { VERSION } from "../host/mod.ts";
import { type PortForward, startForward } from "./forward.ts";
import {
  type AgentProcess,
  type AgentSpawnOptions,
  attachRequest,
  type ExecOutput,
  ExecProcess,
  execRequest,
  KeptAgentProcess,
} from "./process.ts";
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
  #window: number | undefined;
  #forwards = new Set<PortForward>();
  #baseEnv: Record<string, string> = {};
  /** Kept processes not yet ended (they follow a reattach). */
  #kept = new Set<KeptAgentProcess>();
  #detached = false;
  #closed = Promise.withResolvers<Error | undefined>();

  private constructor(mux: Mux, window: number | undefined) {
    this.#mux = mux;
    this.#window = window;
    this.#watchMux(mux);
  }

  #watchMux(mux: Mux): void {
    void mux.closed.then((err) => {
      if (this.#mux !== mux || this.#detached) return;
      this.#end(err);
    });
  }

  #end(err: Error | undefined): void {
    const reason = err ?? new ConnectionError("closed", "Agent connection closed");
    for (const p of this.#kept) p.fail(reason);
    this.#kept.clear();
    this.#closed.resolve(err);
  }

  static #handshake(transport: ByteStream, options: AgentConnectOptions): Promise<Mux> {
    return Mux.connect(transport, {
      role: "host",
      version: VERSION,
      signal: options.signal ?? AbortSignal.timeout(10_000),
      // The host serves no requests: a guest cannot open streams towards it.
      maxStreams: 0,
      ...(options.window ? { window: options.window } : {}),
    });
  }

  /** Speaks the agent protocol over an already connected byte stream. */
  static async connect(
    transport: ByteStream,
    options: AgentConnectOptions = {},
  ): Promise<AgentConnection> {
    const mux = await AgentConnection.#handshake(transport, options);
    return new AgentConnection(mux, options.window);
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

  /**
   * Resolves when the connection ends for good, with the error if it broke (not at a
   * {@linkcode detach}).
   */
  get closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /** True between {@linkcode detach} and {@linkcode reattach}. */
  get detached(): boolean {
    return this.#detached;
  }

  // ------------------------------------------------------------------------------ sessions

  /**
   * Ends the session on purpose, keeping the guest's kept processes (and this object's view of
   * them): the agent's reply is the last thing it writes and it reads nothing more, so the guest
   * can be snapshotted, and the agent then waits for a new host. Requests made until
   * {@linkcode reattach} fail with {@link ConnectionError} `"detached"`; streams of other
   * processes and operations in flight end with it. Port forwards stay listening.
   */
  async detach(): Promise<void> {
    if (this.#detached) return;
    for (const p of this.#kept) p.pause();
    // Set first: the old connection's end must not count as the end of this one.
    this.#detached = true;
    try {
      await this.#mux.detach({ op: "detach" });
    } catch (err) {
      // The agent did not detach: the connection is unusable (it was sealed).
      this.#detached = false;
      this.#end(err as Error);
      throw err;
    }
  }

  /**
   * Continues after {@linkcode detach} over `transport` (a new connection to the same agent,
   * e.g. `vm.connectAgent()` after the snapshot): a new handshake, then every kept process is
   * attached again from the output already delivered.
   */
  async reattach(transport: ByteStream, options: AgentConnectOptions = {}): Promise<void> {
    if (!this.#detached) {
      throw new ConnectionError("closed", "Cannot reattach: the connection was not detached");
    }
    const mux = await AgentConnection.#handshake(transport, {
      ...options,
      ...(this.#window ? { window: this.#window } : {}),
    });
    this.#mux = mux;
    this.#detached = false;
    this.#watchMux(mux);
    for (const p of this.#kept) {
      const id = p.knownId;
      if (id === undefined) {
        // It had not started, or the agent did not keep it (an agent without `keep`).
        p.fail(new ConnectionError("closed", "Cannot reattach a process the agent did not keep"));
        continue;
      }
      p.rebind(this.#open(attachRequest(id, p.delivered), this.#reads(p.tty)));
    }
  }

  /** The processes the agent keeps (running, or exited and not yet reported). */
  async keptProcesses(): Promise<KeptProcessInfo[]> {
    return parseProcessesResult(await this.#call({ op: "processes" })).processes;
  }

  /**
   * Attaches to a kept process the agent listed ({@linkcode keptProcesses}): its output from the
   * start of the agent's buffer, then live; stdin, signals and exit as for `spawn`.
   */
  attach(info: KeptProcessInfo): AgentProcess {
    const proc = new KeptAgentProcess(
      this.#open(attachRequest(info.id, [0, 0]), this.#reads(info.tty)),
      {
        stdinPiped: info.stdin,
        tty: info.tty,
        id: info.id,
        ...(info.label !== undefined ? { label: info.label } : {}),
      },
    );
    this.#track(proc);
    return proc;
  }

  #reads(tty: boolean): number[] {
    return tty ? [Channel.STDOUT] : [Channel.STDOUT, Channel.STDERR];
  }

  #track(proc: KeptAgentProcess): void {
    this.#kept.add(proc);
    void proc.wait().finally(() => this.#kept.delete(proc)).catch(() => {});
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
      this.#reads(options.tty !== undefined),
    );
    if (options.keep) {
      const proc = new KeptAgentProcess(stream, {
        stdinPiped: options.stdin === "piped" || options.tty !== undefined,
        tty: options.tty !== undefined,
        ...(options.label !== undefined ? { label: options.label } : {}),
      });
      this.#track(proc);
      return proc;
    }
    return new ExecProcess(stream, {
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

  /**
   * Makes the guest unique and current before anything else runs in it (a guest restored from
   * a memory snapshot shares its RNG state, clock and names with every other restore): sends
   * `entropyBytes` of fresh host randomness (≥ 32, i.e. ≥ 256 bits; default 64) that the guest
   * credits and reseeds its kernel RNG from, the host's wall clock, and the names.
   */
  async setIdentity(
    identity: { hostname: string; machineId: string },
    options: { entropyBytes?: number } = {},
  ): Promise<IdentityResult> {
    const entropy = crypto.getRandomValues(new Uint8Array(options.entropyBytes ?? 64));
    const request: Request = {
      op: "set_identity",
      entropy: entropy.toBase64(),
      hostname: identity.hostname,
      machineId: identity.machineId,
      // Read last, right before the request is queued.
      unixMs: Date.now(),
    };
    entropy.fill(0);
    return parseIdentityResult(await this.#call(request));
  }

  /**
   * Sets up the guest's NIC (address, default route, MTU) or takes it down: what a guest
   * resumed from a snapshot needs for this run's network.
   */
  async netConfig(
    config:
      | { up: true; address: string; prefix: number; gateway: string; mtu?: number }
      | { up: false },
  ): Promise<void> {
    await this.#call({ op: "net_config", ...config });
  }

  /** Asks the agent to sync and power the guest off. */
  async shutdown(): Promise<void> {
    await this.#call({ op: "shutdown" });
  }

  /** Stops forwards and closes the connection. */
  async close(): Promise<void> {
    for (const f of [...this.#forwards]) await f.close();
    const wasDetached = this.#detached;
    this.#detached = false;
    await this.#mux.close();
    if (wasDetached) this.#end(undefined);
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ----------------------------------------------------------------------------- internals

  /** Opens a stream; `reads` = the channels we read (others are dropped, bounding memory). */
  #open(request: Request, reads: number[] = [Channel.MAIN]): MuxStream {
    if (this.#detached) {
      throw new ConnectionError(
        "detached",
        "Cannot use the guest agent now: the sandbox is being saved (try again)",
      );
    }
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
