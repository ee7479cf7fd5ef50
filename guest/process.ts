/**
 * Processes the guest agent runs: argv/env/cwd, piped or PTY stdio as web streams (so the caller's
 * reading pace is the backpressure), exit status with deaths by signal as `128 + N`, and signals
 * sent to the whole process group.
 *
 * Each process is started with posix_spawn in a session of its own (see `ffi/spawn.ts`), so it
 * leads its own process group (pid == pgid) and `kill` reaches everything it started, even after
 * it exits. The program is looked up in PATH here first, so a missing binary is a
 * {@link ProcessError} with exit code 127 and a readable message, never a hang.
 *
 * @module
 */

import {
  libc,
  type PipedChild,
  type Pty,
  type PtyProcess,
  spawnPiped,
  spawnPty,
  type WindowSize,
} from "../ffi/mod.ts";
import { parseSignal, signalName } from "../proto/mod.ts";

/**
 * After a process exits, its output streams end at the first silence this long (a background
 * child holding the pipe or terminal cannot delay the exit report forever).
 */
export const EXIT_QUIET_MS = 200;

/** PATH used when neither the request nor the agent's environment has one. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Why a process could not be started. */
export type ProcessErrorCode =
  | "not_found"
  | "not_executable"
  | "bad_cwd"
  | "bad_argv"
  | "spawn_failed";

/** A process could not be started; `exitCode` is what a shell would report (127, 126, 1). */
export class ProcessError extends Error {
  /** The reason, for programs. */
  readonly code: ProcessErrorCode;
  /** The exit code to report for this failure. */
  readonly exitCode: number;
  /** The reason alone, e.g. "not found in PATH (/usr/bin:/bin)". */
  readonly reason: string;

  /** Builds the error; `exitCode` follows the shell convention for `code`. */
  constructor(
    code: ProcessErrorCode,
    action: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${action}: ${reason}`, options);
    this.name = "ProcessError";
    this.code = code;
    this.reason = reason;
    this.exitCode = code === "not_found" ? 127 : code === "not_executable" ? 126 : 1;
  }
}

/** How a process ended. */
export interface ExitStatus {
  /** The exit code, or `128 + N` when killed by signal N. */
  code: number;
  /** The signal that killed it (`"SIGKILL"`), or null when it exited. */
  signal: string | null;
}

/** Options for {@link startProcess}. */
export interface StartProcessOptions {
  /** Variables set on top of `baseEnv`. */
  env?: Record<string, string>;
  /** The environment the request's `env` is laid over; default: the agent's own. */
  baseEnv?: Record<string, string>;
  /** Working directory; default: the agent's. */
  cwd?: string;
  /** Run on a new PTY of this size instead of pipes (stderr is then merged into stdout). */
  tty?: WindowSize;
  /** Pipe stdin (true) or give the process /dev/null (false). Ignored with `tty`. @default true */
  stdin?: boolean;
}

/** A running process started by {@link startProcess}. */
export interface GuestProcess {
  /** Its pid, also its process group id. */
  readonly pid: number;
  /**
   * Its input; closing it closes the pipe (EOF). On a PTY, closing sends nothing. With
   * `stdin: false` writes are discarded (the process reads /dev/null).
   */
  readonly stdin: WritableStream<Uint8Array>;
  /** Its standard output (on a PTY: the terminal's output). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Its standard error, or null on a PTY. */
  readonly stderr: ReadableStream<Uint8Array> | null;
  /** Resolves once it has exited. */
  readonly status: Promise<ExitStatus>;
  /** Sends `signal` to its whole process group; false when the group is already gone. */
  kill(signal: string | number): boolean;
  /** Resizes its PTY. @throws ProcessError when it has no PTY. */
  resize(size: WindowSize): void;
}

/** Looks `argv0` up the way execvp does; returns the path that will run. */
export function resolveProgram(argv0: string, options: { path: string; cwd: string }): string {
  if (argv0 === "") throw new ProcessError("bad_argv", "Cannot run a program", "its name is empty");
  return searchProgram(argv0, options);
}

function searchProgram(argv0: string, options: { path: string; cwd: string }): string {
  const candidates = argv0.includes("/")
    ? [absolute(argv0, options.cwd)]
    : options.path.split(":").map((dir) => absolute(`${dir || "."}/${argv0}`, options.cwd));
  let denied: string | null = null;
  for (const candidate of candidates) {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(candidate);
    } catch {
      continue;
    }
    if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return candidate;
    denied ??= candidate;
  }
  if (denied !== null) {
    throw new ProcessError(
      "not_executable",
      `Cannot run ${argv0}`,
      `${denied} is not an executable file`,
    );
  }
  const where = argv0.includes("/") ? "no such file" : `not found in PATH (${options.path})`;
  throw new ProcessError("not_found", `Cannot run ${argv0}`, where);
}

function absolute(path: string, cwd: string): string {
  return path.startsWith("/") ? path : `${cwd.replace(/\/$/, "")}/${path}`;
}

function checkCwd(cwd: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(cwd);
  } catch (e) {
    throw new ProcessError("bad_cwd", `Cannot run in ${cwd}`, "no such directory", { cause: e });
  }
  if (!info.isDirectory) {
    throw new ProcessError("bad_cwd", `Cannot run in ${cwd}`, "not a directory");
  }
}

function toExitStatus(s: libc.WaitStatus): ExitStatus {
  return s.exited
    ? { code: s.code, signal: null }
    : { code: 128 + s.signal, signal: signalName(s.signal) };
}

function spawnError(argv0: string, e: unknown): ProcessError {
  const action = `Cannot run ${argv0}`;
  if (e instanceof libc.LibcError) {
    switch (e.errno) {
      case libc.ERRNO.ENOENT:
        return new ProcessError(
          "not_found",
          action,
          "no such file (or its interpreter is missing)",
          { cause: e },
        );
      case libc.ERRNO.EACCES:
      case libc.ERRNO.ENOEXEC:
      case libc.ERRNO.ETXTBSY:
        return new ProcessError("not_executable", action, `cannot execute (${e.code})`, {
          cause: e,
        });
    }
  }
  return new ProcessError("spawn_failed", action, (e as Error).message, { cause: e });
}

function killGroup(pgid: number, signal: string | number): boolean {
  const n = parseSignal(signal);
  try {
    libc.kill(-pgid, n);
    return true;
  } catch (e) {
    if (e instanceof libc.LibcError && e.code === "ESRCH") return false;
    throw e;
  }
}

/**
 * Starts `argv` in a new process group.
 *
 * @throws ProcessError when argv is empty, the cwd is not a directory, or the program cannot be
 * found or executed (see `exitCode`).
 */
export function startProcess(
  argv: readonly string[],
  options: StartProcessOptions = {},
): GuestProcess {
  if (argv.length === 0 || argv[0] === undefined) {
    throw new ProcessError("bad_argv", "Cannot run a process", "argv is empty");
  }
  const env: Record<string, string> = {
    ...(options.baseEnv ?? Deno.env.toObject()),
    ...options.env,
  };
  env.PATH ??= DEFAULT_PATH;
  // A terminal is xterm-256color unless the request says otherwise (the agent's own TERM, if
  // any, describes the console it was started on, not this PTY).
  if (options.tty) env.TERM = options.env?.TERM ?? "xterm-256color";
  const cwd = options.cwd ?? Deno.cwd();
  checkCwd(cwd);
  const path = resolveProgram(argv[0], { path: env.PATH, cwd });
  if (options.tty) return startOnPty(argv, { path, env, cwd, size: options.tty });

  let child: PipedChild;
  try {
    child = spawnPiped({ path, argv, env, cwd, stdin: options.stdin === false ? "null" : "piped" });
  } catch (e) {
    throw spawnError(argv[0], e);
  }
  const pid = child.pid;
  return {
    pid,
    stdin: child.stdin?.writable ?? new WritableStream(),
    stdout: child.stdout.readable,
    stderr: child.stderr.readable,
    status: child.status.then((s) => {
      // A background child may keep the pipes open forever; the exit must still be reported.
      child.stdout.endWhenQuiet(EXIT_QUIET_MS);
      child.stderr.endWhenQuiet(EXIT_QUIET_MS);
      return toExitStatus(s);
    }),
    kill: (signal) => killGroup(pid, signal),
    resize: () => {
      throw new ProcessError("bad_argv", `Cannot resize process ${pid}`, "it has no terminal");
    },
  };
}

function startOnPty(
  argv: readonly string[],
  options: { path: string; env: Record<string, string>; cwd: string; size: WindowSize },
): GuestProcess {
  let p: PtyProcess;
  try {
    p = spawnPty(argv, {
      ...options.size,
      env: options.env,
      cwd: options.cwd,
      path: options.path,
      quietMs: EXIT_QUIET_MS,
    });
  } catch (e) {
    if (e instanceof RangeError) throw e;
    throw spawnError(argv[0]!, e);
  }
  const pty: Pty = p.pty;
  return {
    pid: p.pid,
    stdin: new WritableStream<Uint8Array>({
      write: (chunk) => pty.write(chunk),
    }),
    stdout: pty.readable,
    stderr: null,
    status: p.status.then(toExitStatus),
    kill: (signal) => killGroup(p.pid, signal),
    resize: (next) => pty.resize(next),
  };
}
