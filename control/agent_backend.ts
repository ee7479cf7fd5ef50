/**
 * Binds the host-side `Sandbox` of `sandbox/` (a guest agent connection) to
 * {@linkcode ControlBackend}. The control server then serves that agent; a supervisor adds
 * `checkpoint`, `shutdown` and `info` by passing them in.
 *
 * The agent's `Sandbox` is described structurally ({@linkcode AgentSandbox}) so control/ does not
 * import sandbox/ (no import cycle; the CLI wires them together).
 *
 * @module
 */

import type {
  BackendDirEntry,
  BackendExit,
  BackendFileEvent,
  BackendProcess,
  BackendStat,
  BackendWatch,
  ControlBackend,
} from "./backend.ts";
import { serverError } from "./errors.ts";

/** A process of the agent's `Sandbox.spawn`. */
export interface AgentProcess {
  /** Output. */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Error output. */
  readonly stderr: ReadableStream<Uint8Array>;
  /** Input (spawned with stdin "piped"). */
  readonly stdin: WritableStream<Uint8Array>;
  /** Waits for the exit. */
  wait(): Promise<{ exitCode: number; signal?: string }>;
  /** Signals the process group. */
  kill(signal?: Deno.Signal): Promise<void>;
  /** Resizes the PTY. */
  resize(rows: number, cols: number): Promise<void>;
}

/** The part of the agent's `Sandbox` (sandbox/sandbox.ts) the control server uses. */
export interface AgentSandbox {
  /** Starts a process. */
  spawn(argv: string[], options: {
    env?: Record<string, string>;
    cwd?: string;
    stdin?: "piped" | "null";
    tty?: { rows: number; cols: number };
  }): AgentProcess;
  /** Streams a file. */
  readFile(path: string, options?: { offset?: number; length?: number }): ReadableStream<
    Uint8Array
  >;
  /** Writes a file. */
  writeFile(
    path: string,
    data: Uint8Array,
    options?: { mode?: number; append?: boolean; offset?: number },
  ): Promise<number>;
  /** Creates a directory. */
  mkdir(path: string, options?: { recursive?: boolean; mode?: number }): Promise<void>;
  /** Lists a directory. */
  readDir(path: string): AsyncIterable<{ name: string; type: string }>;
  /** Stats a path. */
  stat(path: string, options?: { lstat?: boolean }): Promise<
    { type: string; size: number; mode: number; mtime: number | null }
  >;
  /** Removes a path. */
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Renames. */
  rename(from: string, to: string): Promise<void>;
  /** Copies. */
  copy(from: string, to: string, options?: { recursive?: boolean }): Promise<void>;
  /** Changes permission bits. */
  chmod(path: string, mode: number): Promise<void>;
  /** Watches until the signal aborts; resolves once the watcher is installed. */
  watchReady(path: string, options?: { recursive?: boolean; signal?: AbortSignal }): Promise<
    AsyncGenerator<{ kind: string; paths: string[] }>
  >;
}

/**
 * What every user command gets unless it says otherwise: an image's Env, WorkingDir, and a
 * command prefix that switches to its User (`runner/image.ts` makes these).
 */
export interface AgentSpawnDefaults {
  /** Variables under the request's own. */
  env: Record<string, string>;
  /** The working folder when the request names none. */
  cwd?: string;
  /** Put in front of argv. */
  argvPrefix: string[];
}

/** What a supervisor adds to an agent-backed server. */
export interface AgentBackendOptions {
  /** Defaults of every spawn (an image's settings). */
  spawnDefaults?: AgentSpawnDefaults;
  /** Saves the running sandbox's disk. */
  checkpoint?: (name: string) => Promise<Record<string, unknown>>;
  /** Stops the sandbox. */
  shutdown?: () => Promise<void>;
  /** Facts for `initialize`. */
  info?: () => Record<string, unknown>;
}

const S_IFMT: Record<string, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  other: 0,
};

/** Serves `sandbox` (an agent connection) through the control protocol. */
export function agentBackend(
  sandbox: AgentSandbox,
  options: AgentBackendOptions = {},
): ControlBackend {
  const backend: ControlBackend = {
    spawn(argv, opts) {
      const d = options.spawnDefaults;
      const env = d ? { ...d.env, ...(opts.env ?? {}) } : opts.env;
      const cwd = opts.cwd ?? d?.cwd;
      const proc = sandbox.spawn(d ? [...d.argvPrefix, ...argv] : argv, {
        ...(env ? { env } : {}),
        ...(cwd ? { cwd } : {}),
        ...(opts.tty ? { tty: opts.tty } : {}),
        stdin: opts.stdin === false && !opts.tty ? "null" : "piped",
      });
      return Promise.resolve(wrapProcess(proc, opts.tty !== undefined, opts.stdin !== false));
    },

    async readFile(path, range) {
      const stream = sandbox.readFile(path, range);
      const parts: Uint8Array[] = [];
      let n = 0;
      for await (const chunk of stream) {
        if (n + chunk.length > range.length) {
          throw serverError("EIO", `Cannot read ${path}: the agent sent more than asked`);
        }
        parts.push(chunk);
        n += chunk.length;
      }
      if (parts.length === 1) return parts[0]!;
      const out = new Uint8Array(n);
      let o = 0;
      for (const p of parts) {
        out.set(p, o);
        o += p.length;
      }
      return out;
    },

    async writeFile(path, data, opts) {
      const mode = opts.mode !== undefined ? { mode: opts.mode } : {};
      if (opts.truncate) {
        if (opts.offset === 0) {
          await sandbox.writeFile(path, data, mode);
          return;
        }
        // The agent truncates only to zero (a new file); cutting mid-file is not offered.
        throw serverError(
          "EINVAL",
          `Cannot write ${path} at offset ${opts.offset} with truncate: truncate only at offset 0`,
        );
      }
      await sandbox.writeFile(path, data, { offset: opts.offset, ...mode });
    },

    mkdir: (path, opts) => sandbox.mkdir(path, opts),

    async readDir(path) {
      const out: BackendDirEntry[] = [];
      for await (const e of sandbox.readDir(path)) {
        const type = e.type === "file" || e.type === "dir" || e.type === "symlink"
          ? e.type
          : "other";
        out.push({ name: e.name, type, size: 0 });
      }
      // Sizes of regular files (the reference lists them), a few stats at a time.
      const files = out.filter((e) => e.type === "file").slice(0, 4096);
      const base = path.endsWith("/") ? path : path + "/";
      for (let i = 0; i < files.length; i += 32) {
        await Promise.all(
          files.slice(i, i + 32).map(async (e) => {
            try {
              e.size = (await sandbox.stat(base + e.name, { lstat: true })).size;
            } catch {
              // Removed meanwhile.
            }
          }),
        );
      }
      return out;
    },

    async stat(path, opts): Promise<BackendStat> {
      const s = await sandbox.stat(path, { lstat: opts.lstat });
      return {
        size: s.size,
        mode: (S_IFMT[s.type] ?? 0) | s.mode,
        mtimeMs: s.mtime ?? 0,
        isDir: s.type === "dir",
        isFile: s.type === "file",
        isSymlink: s.type === "symlink",
      };
    },

    remove: (path, opts) => sandbox.remove(path, opts),
    rename: (from, to) => sandbox.rename(from, to),
    copy: (from, to, opts) => sandbox.copy(from, to, opts),
    chmod: (path, mode) => sandbox.chmod(path, mode),

    async watch(path, opts): Promise<BackendWatch> {
      const stop = new AbortController();
      // Resolves once the agent's watcher is installed: no change after the reply is missed.
      const gen = await sandbox.watchReady(path, {
        recursive: opts.recursive,
        signal: stop.signal,
      });
      async function* events(): AsyncGenerator<BackendFileEvent> {
        for await (const ev of gen) {
          const event = ev.kind === "create" || ev.kind === "modify" || ev.kind === "delete" ||
              ev.kind === "rename"
            ? ev.kind
            : "other";
          for (const p of ev.paths) yield { path: p, event };
        }
      }
      const iter = events();
      return {
        [Symbol.asyncIterator]: () => iter,
        async close() {
          stop.abort();
          await gen.return(undefined).catch(() => {});
        },
      };
    },
  };
  if (options.checkpoint) backend.checkpoint = options.checkpoint;
  if (options.shutdown) backend.shutdown = options.shutdown;
  if (options.info) backend.info = options.info;
  return backend;
}

function wrapProcess(proc: AgentProcess, tty: boolean, piped: boolean): BackendProcess {
  let writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  const stdinWriter = () => {
    if (!piped) throw new TypeError("Cannot write to stdin: the process has none (/dev/null)");
    return (writer ??= proc.stdin.getWriter());
  };
  const status: Promise<BackendExit> = proc.wait().then((s) => ({
    code: s.exitCode,
    signal: s.signal ?? null,
  }));
  return {
    stdout: proc.stdout,
    stderr: tty ? null : proc.stderr,
    write: (data) => stdinWriter().write(data),
    async closeStdin() {
      if (piped) await stdinWriter().close();
    },
    kill: (signal) => proc.kill(signal as Deno.Signal),
    resize: (rows, cols) => proc.resize(rows, cols),
    status,
  };
}
