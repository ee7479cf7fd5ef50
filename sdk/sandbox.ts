/**
 * The SDK's `Sandbox`: a running shuru sandbox driven through its control socket, and nothing
 * else (no private path around the protocol).
 *
 * @module
 */

import { dataHome, homeLayout, nameProblem, sandboxControlSocket } from "../host/mod.ts";
import { connectControl, type ControlClient, Limits } from "../control/mod.ts";
import type { NetworkSpec, SpecLayer } from "../spec/mod.ts";
import { SandboxError, sdkRequest, toSandboxError } from "./errors.ts";
import { SandboxFs, type SandboxFsEvent } from "./fs.ts";
import { SandboxProcess } from "./process.ts";

/** Where to find a sandbox's control socket. */
export interface ConnectOptions {
  /** shuru's data home (default: `$SHURU_HOME`, else `~/.local/share/shuru`). */
  home?: string;
}

/**
 * Options of {@linkcode Sandbox.create}: the sandbox's settings (any field of a `SandboxSpec`:
 * `cpus`, `memoryMiB`, `diskSizeMiB`, `from`, `mounts`, `ports`, `network`, `idleTimeoutMs`,
 * ...; `shuru start` validates them) and how to start it. Secrets go through `extraArgs`
 * (`--secret NAME@HOSTS`), never as values in the options.
 */
export interface CreateOptions extends ConnectOptions, Omit<SpecLayer, "network"> {
  /** The guest's network, e.g. `{ allowNet: true }`. */
  network?: Omit<NetworkSpec, "secrets">;
  /** Sandbox name (default: generated). */
  name?: string;
  /** Further `shuru start` flags. */
  extraArgs?: string[];
  /** The command that runs shuru (default: this package's main.ts under the current Deno). */
  shuru?: string[];
}

/** Options of {@linkcode Sandbox.exec}. */
export interface ExecOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Bytes or text for stdin. */
  stdin?: string | Uint8Array;
  /** Kill after this long (default 300000 ms); the result says `timedOut`. */
  timeoutMs?: number;
  /** Bytes of stdout and of stderr kept (default 1 MiB). */
  maxOutputBytes?: number;
  /** Aborting cancels the request and kills the process. */
  signal?: AbortSignal;
}

/** Result of {@linkcode Sandbox.exec}: a non-zero exit is a result, not an error. */
export interface ExecResult {
  /** Standard output (UTF-8). */
  stdout: string;
  /** Standard error (UTF-8). */
  stderr: string;
  /** Exit code (128+N after signal N). */
  exitCode: number;
  /** Name of the signal that killed it, or null. */
  signal: string | null;
  /** True when the timeout killed it. */
  timedOut: boolean;
  /** True when output beyond `maxOutputBytes` was dropped. */
  truncated: boolean;
}

/** Options of {@linkcode Sandbox.spawn}. */
export interface SpawnOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run on a terminal of this size. */
  tty?: { rows: number; cols: number };
}

/** What {@linkcode Sandbox.readOutput} returns. */
export interface ProcessOutput {
  /** Chunks after `sinceSeq`, oldest first. */
  chunks: Array<{ seq: number; stream: "stdout" | "stderr"; data: Uint8Array }>;
  /** True when older chunks after `sinceSeq` were already dropped from the buffer. */
  truncated: boolean;
  /** The seq the next chunk will get; pass `nextSeq - 1` as `sinceSeq` next time. */
  nextSeq: number;
  /** Set once the process has exited. */
  exit: { exitCode: number; signal: string | null } | null;
}

/** One entry of {@linkcode Sandbox.ps}. */
export interface ProcessInfo {
  /** Protocol pid. */
  pid: string;
  /** Command. */
  argv: string[];
  /** exec or spawn. */
  kind: string;
  /** running or exited. */
  state: "running" | "exited";
  /** Exit code once exited. */
  exitCode: number | null;
}

function argvOf(command: string | string[]): string[] {
  return typeof command === "string" ? ["/bin/sh", "-c", command] : command;
}

/** The control socket path of sandbox `name`. */
export function controlSocketPath(name: string, options: ConnectOptions = {}): string {
  const problem = nameProblem("sandbox", name);
  if (problem) throw new SandboxError("CONNECT", problem);
  let root: string;
  try {
    root = options.home ?? dataHome();
  } catch (err) {
    throw new SandboxError("CONNECT", (err as Error).message, { cause: err });
  }
  return sandboxControlSocket(homeLayout(root), name);
}

/**
 * A running sandbox.
 *
 * @example Connect to a sandbox started with `shuru start --name dev`
 * ```ts ignore
 * import { Sandbox } from "./mod.ts";
 * await using sb = await Sandbox.connect("dev");
 * const r = await sb.exec(["echo", "hi"]);
 * console.log(r.stdout, r.exitCode);
 * ```
 */
export class Sandbox implements AsyncDisposable {
  /** Its name (or the socket path it was reached by). */
  readonly name: string;
  /** The guest's files: read, write, list, watch (through the control protocol). */
  readonly fs: SandboxFs;
  /** What `initialize` reported. */
  readonly info: Record<string, unknown>;
  readonly #client: ControlClient;
  readonly #owned: boolean;
  readonly #processes = new Map<string, SandboxProcess>();
  readonly #orphans = new Map<string, Array<Record<string, unknown>>>();
  readonly #watchers = new Map<string, (ev: SandboxFsEvent) => void>();
  #closed = false;

  private constructor(
    name: string,
    client: ControlClient,
    info: Record<string, unknown>,
    owned: boolean,
  ) {
    this.name = name;
    this.#client = client;
    this.info = info;
    this.#owned = owned;
    const limits = (info.capabilities as { limits?: { max_chunk_bytes?: number } } | undefined)
      ?.limits;
    this.fs = new SandboxFs(client, {
      chunkBytes: Math.min(
        limits?.max_chunk_bytes ?? Limits.MAX_CHUNK_BYTES,
        Limits.MAX_CHUNK_BYTES,
      ),
      watchers: this.#watchers,
    });
    client.onNotification((n) => this.#onNotification(n.method, n.params));
    void client.closed.then(() => {
      const err = new SandboxError("CLOSED", `Cannot reach sandbox ${name}: the connection closed`);
      for (const p of this.#processes.values()) p.fail(err);
      this.#processes.clear();
    });
  }

  /**
   * Connects to a running sandbox: a name (its socket in the data home), `unix:PATH` or an
   * absolute socket path.
   */
  static async connect(target: string, options: ConnectOptions = {}): Promise<Sandbox> {
    return await Sandbox.#open(target, options, false);
  }

  static async #open(target: string, options: ConnectOptions, owned: boolean): Promise<Sandbox> {
    const path = target.startsWith("unix:")
      ? target.slice(5)
      : target.startsWith("/")
      ? target
      : controlSocketPath(target, options);
    let client: ControlClient;
    try {
      client = await connectControl(path);
    } catch (err) {
      throw toSandboxError(err);
    }
    try {
      const info = await client.request("initialize", {
        client: { name: "shuru-sdk" },
        stop_on_close: owned,
      });
      return new Sandbox(target, client, info, owned);
    } catch (err) {
      await client.close();
      throw toSandboxError(err);
    }
  }

  /**
   * Boots a new sandbox with `shuru start` and connects to it. It is stopped when disposed, and
   * when this process exits (the server stops a sandbox whose owner connection closes).
   */
  static async create(options: CreateOptions = {}): Promise<Sandbox> {
    const name = options.name ?? `sdk-${crypto.randomUUID().slice(0, 8)}`;
    const shuru = options.shuru ??
      [Deno.execPath(), "run", "-A", new URL("../main.ts", import.meta.url).pathname];
    const { home: _home, name: _name, extraArgs, shuru: _shuru, ...settings } = options;
    const args = [...shuru.slice(1), "start", "--name", name, "--spec", JSON.stringify(settings)];
    if (extraArgs) args.push(...extraArgs);
    const env: Record<string, string> = {};
    if (options.home) env.SHURU_HOME = options.home;
    const out = await new Deno.Command(shuru[0]!, { args, env, stdin: "null" }).output();
    if (!out.success) {
      const msg = new TextDecoder().decode(out.stderr).trim();
      throw new SandboxError("START", `Cannot start sandbox ${name}: ${msg || `exit ${out.code}`}`);
    }
    return await Sandbox.#open(name, options, true);
  }

  /**
   * Boots a new sandbox from `checkpoint`: a local checkpoint's name, or a registry reference
   * (`ghcr.io/team/env:v1`, `localhost:5000/x@sha256:...`), booted without pulling it first:
   * its chunks are fetched as the guest reads them (docs/remote.md). A checkpoint of an image
   * keeps the image's user, working directory, environment and architecture.
   *
   * @example Start from a checkpoint someone pushed
   * ```ts ignore
   * import { Sandbox } from "./mod.ts";
   * await using sb = await Sandbox.fromCheckpoint("ghcr.io/team/deps:v1");
   * console.log((await sb.exec("make test")).exitCode);
   * ```
   */
  static fromCheckpoint(checkpoint: string, options: CreateOptions = {}): Promise<Sandbox> {
    return Sandbox.create({ ...options, from: checkpoint });
  }

  /** Runs a command to completion (a string runs under /bin/sh -c). */
  async exec(command: string | string[], options: ExecOptions = {}): Promise<ExecResult> {
    const params: Record<string, unknown> = { argv: argvOf(command) };
    if (options.cwd) params.cwd = options.cwd;
    if (options.env) params.env = options.env;
    if (options.timeoutMs !== undefined) params.timeout_ms = options.timeoutMs;
    if (options.maxOutputBytes !== undefined) params.max_output_bytes = options.maxOutputBytes;
    if (typeof options.stdin === "string") params.stdin = options.stdin;
    else if (options.stdin) params.stdin_base64 = options.stdin;
    const r = await this.#call<{
      stdout: string;
      stderr: string;
      exit_code: number;
      signal: string | null;
      timed_out: boolean;
      truncated?: { stdout: boolean; stderr: boolean };
    }>("exec", params, options.signal);
    return {
      stdout: r.stdout,
      stderr: r.stderr,
      exitCode: r.exit_code,
      signal: r.signal,
      timedOut: r.timed_out,
      truncated: !!(r.truncated?.stdout || r.truncated?.stderr),
    };
  }

  /** Starts a process and returns it with its streams. */
  async spawn(command: string | string[], options: SpawnOptions = {}): Promise<SandboxProcess> {
    const params: Record<string, unknown> = { argv: argvOf(command) };
    if (options.cwd) params.cwd = options.cwd;
    if (options.env) params.env = options.env;
    if (options.tty) Object.assign(params, { tty: true, ...options.tty });
    const { pid } = await this.#call<{ pid: string }>("spawn", params);
    const proc = new SandboxProcess(this.#client, pid);
    this.#processes.set(pid, proc);
    // Notifications that arrived before this code ran (same read as the reply).
    for (const n of this.#orphans.get(pid) ?? []) this.#onNotification(n.method as string, n);
    this.#orphans.delete(pid);
    return proc;
  }

  /** Lists the sandbox's processes (all clients'). */
  async ps(): Promise<ProcessInfo[]> {
    const r = await this.#call<{ processes: Array<Record<string, unknown>> }>("ps", {});
    return r.processes.map((p) => ({
      pid: p.pid as string,
      argv: p.argv as string[],
      kind: p.kind as string,
      state: p.state as "running" | "exited",
      exitCode: (p.exit_code as number | null) ?? null,
    }));
  }

  /**
   * Output of any process of this sandbox (also ones started by other clients) after
   * `sinceSeq`, from its bounded buffer, without following it.
   */
  async readOutput(pid: string, options: { sinceSeq?: number } = {}): Promise<ProcessOutput> {
    const r = await this.#call<{
      chunks: Array<{ seq: number; stream: string; data: string }>;
      truncated: boolean;
      next_seq: number;
      exited: { code: number; signal: string | null } | null;
    }>("attach", { pid, since_seq: options.sinceSeq ?? 0, follow: false });
    return {
      chunks: r.chunks.map((c) => ({
        seq: c.seq,
        stream: c.stream === "stderr" ? "stderr" : "stdout",
        data: Uint8Array.fromBase64(c.data),
      })),
      truncated: r.truncated,
      nextSeq: r.next_seq,
      exit: r.exited ? { exitCode: r.exited.code, signal: r.exited.signal } : null,
    };
  }

  /** Writes to the stdin of process `pid` (`eof` closes it after). */
  async writeInput(pid: string, data: Uint8Array, options: { eof?: boolean } = {}): Promise<void> {
    await this.#call("input", { pid, data, eof: options.eof ?? false });
  }

  /** Sends a signal to process `pid` (default SIGTERM). */
  async killProcess(pid: string, signal = "SIGTERM"): Promise<void> {
    await this.#call("kill", { pid, signal });
  }

  /** Saves the running sandbox's disk as a checkpoint; it keeps running. */
  async checkpoint(name: string): Promise<Record<string, unknown>> {
    return await this.#call("checkpoint", { name });
  }

  /** Stops the sandbox and disconnects. */
  async stop(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#call("shutdown", {});
    } finally {
      await this.close();
    }
  }

  /** Disconnects (a sandbox created by {@linkcode Sandbox.create} stops with it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#client.close();
  }

  /** Stops a sandbox this object created; disconnects from one it connected to. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#owned) await this.stop().catch(() => this.close());
    else await this.close();
  }

  #call<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<T> {
    return sdkRequest<T>(this.#client, method, { params, ...(signal ? { signal } : {}) });
  }

  #onNotification(method: string, params: Record<string, unknown>): void {
    if (method === "file_change") {
      const kind = params.event === "delete" ? "remove" : params.event;
      this.#watchers.get(params.watch_id as string)?.({
        kind: (["create", "modify", "remove", "rename"].includes(kind as string)
          ? kind
          : "other") as SandboxFsEvent["kind"],
        paths: [params.path as string],
      });
      return;
    }
    if (method !== "output" && method !== "exit") return;
    const pid = params.pid as string;
    const proc = this.#processes.get(pid);
    if (!proc) {
      const list = this.#orphans.get(pid) ?? [];
      if (list.length < 4096 && this.#orphans.size < 1024) {
        list.push({ ...params, method });
        this.#orphans.set(pid, list);
      }
      return;
    }
    if (method === "output") {
      const stream = params.stream === "stderr" ? "stderr" : "stdout";
      proc.deliver(stream, Uint8Array.fromBase64(params.data as string), params.seq as number);
    } else {
      this.#processes.delete(pid);
      proc.finish(params.code as number, (params.signal as string | null) ?? null);
    }
  }
}
