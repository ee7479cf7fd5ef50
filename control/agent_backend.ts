/**
 * Binds an {@linkcode AgentConnection} (agent/) to {@linkcode ControlBackend}. The control server
 * then serves that agent; a supervisor adds `checkpoint`, `shutdown` and `info` by passing them
 * in.
 *
 * @module
 */

import {
  type AgentConnection,
  type AgentProcess,
  applySpawnDefaults,
  type SpawnDefaults,
} from "../agent/mod.ts";
import type {
  BackendDirEntry,
  BackendExit,
  BackendFileEvent,
  BackendProcess,
  BackendStat,
  BackendWatch,
  CheckpointReport,
  ControlBackend,
} from "./backend.ts";
import { serverError } from "./errors.ts";
import { concatBytes } from "../io/mod.ts";

const NO_SPAWN_DEFAULTS: SpawnDefaults = { env: {}, argvPrefix: [] };

/** What a supervisor adds to an agent-backed server. */
export interface AgentBackendOptions {
  /** Defaults of every spawn (an image's settings). */
  spawnDefaults?: SpawnDefaults;
  /** Saves the running sandbox's disk (and with `memory`, its memory). */
  checkpoint?: (name: string, options: { memory: boolean }) => Promise<CheckpointReport>;
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
  sandbox: AgentConnection,
  options: AgentBackendOptions = {},
): ControlBackend {
  const backend: ControlBackend = {
    spawn(argv, opts) {
      const cmd = applySpawnDefaults(options.spawnDefaults ?? NO_SPAWN_DEFAULTS, argv, opts);
      // Kept: the processes of a sandbox survive a memory checkpoint (a detach of the agent
      // session) and are found again by a sandbox resumed from it (`adopt`).
      const proc = sandbox.spawn(cmd.argv, {
        env: cmd.env,
        ...(cmd.cwd ? { cwd: cmd.cwd } : {}),
        ...(opts.tty ? { tty: opts.tty } : {}),
        stdin: opts.stdin === false && !opts.tty ? "null" : "piped",
        keep: true,
        ...(opts.label !== undefined ? { label: opts.label } : {}),
      });
      return Promise.resolve(wrapProcess(proc, opts.tty !== undefined, opts.stdin !== false));
    },

    async adopt() {
      const kept = await sandbox.keptProcesses();
      return kept.map((info) => ({
        ...(info.label !== undefined ? { label: info.label } : {}),
        argv: info.argv,
        process: wrapProcess(sandbox.attach(info), info.tty, info.stdin),
      }));
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
      return parts.length === 1 ? parts[0]! : concatBytes(parts);
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
      // Sizes of regular files (the reference, the Rust shuru for macOS, lists them), a few
      // stats at a time.
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
  // Read once the output is drained (later): a connection lost first must not be an unhandled
  // rejection meanwhile.
  status.catch(() => {});
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
