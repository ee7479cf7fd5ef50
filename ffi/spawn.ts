/**
 * Starting processes through posix_spawn(3) via FFI, each in a session (and process group) of its
 * own, with non-blocking pipes read through the shared poller, and exits collected on SIGCHLD.
 *
 * Why not Deno.Command: it cannot put a child in its own process group or session, and it cannot
 * hand a child an arbitrary fd (a PTY slave). Wrapping every child in `setsid` costs an extra exec
 * (about 1.5 ms per process, measured); posix_spawn with POSIX_SPAWN_SETSID costs nothing extra,
 * and opening a PTY slave on fd 0 after setsid makes it the controlling terminal, with no `sh` or
 * `setsid -c` in between.
 *
 * Exits: a SIGCHLD listener (installed only while we have children, with a poller sleep that keeps
 * the event loop alive and re-checks every 500 ms; not `setInterval`, see `poller.ts`) calls
 * waitpid(pid, WNOHANG) for each of our pids. It never waits for -1, so the children Deno.Command starts elsewhere in
 * the process keep being reaped by Deno.
 *
 * @module
 */

import * as libc from "./libc.ts";
import { FdStream } from "./fd_stream.ts";
import { poller } from "./poller.ts";

const { LINUX } = libc;

/** Pipe buffer asked for a child's stdout/stderr: fewer, larger reads than the 64 KiB default. */
export const PIPE_BYTES = 1024 * 1024;

// ------------------------------------------------------------------------------------ reaping

const waiting = new Map<number, (status: libc.WaitStatus) => void>();
let listening = false;
/**
 * Signal listeners do not keep Deno's event loop alive; a loop of poller sleeps does while a child
 * runs (and doubles as a safety net for a coalesced or missed SIGCHLD). Aborted when none is left.
 */
let keepAlive: AbortController | undefined;
const SAFETY_POLL_MS = 500;

async function safetyPoll(stop: AbortSignal): Promise<void> {
  while (await poller.sleep(SAFETY_POLL_MS, stop)) collectExits();
}

function collectExits(): void {
  for (const [pid, resolve] of waiting) {
    let status: libc.WaitStatus | null;
    try {
      status = libc.tryWait(pid);
    } catch {
      // ECHILD: someone reaped it with waitpid(-1); its status is lost.
      status = { exited: true, code: 255 };
    }
    if (status) {
      waiting.delete(pid);
      resolve(status);
    }
  }
  if (waiting.size === 0 && listening) {
    Deno.removeSignalListener("SIGCHLD", collectExits);
    keepAlive?.abort();
    keepAlive = undefined;
    listening = false;
  }
}

/** Resolves when our child `pid` ends (and reaps it). */
export function waitForExit(pid: number): Promise<libc.WaitStatus> {
  return new Promise((resolve) => {
    waiting.set(pid, resolve);
    if (!listening) {
      Deno.addSignalListener("SIGCHLD", collectExits);
      keepAlive = new AbortController();
      void safetyPoll(keepAlive.signal);
      listening = true;
    }
    // It may have ended before the listener existed.
    collectExits();
  });
}

// ---------------------------------------------------------------------------------- spawning

/** How a child's stdin is set up. */
export type StdinMode = "piped" | "null";

/** Options for {@link spawnPiped}. */
export interface SpawnPipedOptions {
  /** Executable path (resolved already; no PATH search). */
  path: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** Complete environment. */
  env: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** stdin from a pipe (default) or /dev/null. */
  stdin?: StdinMode;
}

/** A child started by {@link spawnPiped} or {@link spawnOnTerminal}. */
export interface SpawnedChild {
  /** pid == pgid == sid. */
  readonly pid: number;
  /** Resolves when it has ended. */
  readonly status: Promise<libc.WaitStatus>;
}

/** A child with pipes. */
export interface PipedChild extends SpawnedChild {
  /** Its stdin (null with `stdin: "null"`). */
  readonly stdin: FdStream | null;
  /** Its stdout. */
  readonly stdout: FdStream;
  /** Its stderr. */
  readonly stderr: FdStream;
}

function envStrings(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

function closeQuietly(fds: number[]): void {
  for (const fd of fds) {
    try {
      libc.close(fd);
    } catch { /* already closed */ }
  }
}

/**
 * Starts a child in a new session with stdout/stderr (and stdin) on pipes.
 *
 * @throws LibcError from posix_spawn (ENOENT, EACCES, ENOEXEC, ...) or pipe creation.
 */
export function spawnPiped(options: SpawnPipedOptions): PipedChild {
  const opened: number[] = [];
  try {
    const stdinPipe = options.stdin === "null" ? null : libc.pipe();
    if (stdinPipe) opened.push(...stdinPipe);
    const stdoutPipe = libc.pipe();
    opened.push(...stdoutPipe);
    const stderrPipe = libc.pipe();
    opened.push(...stderrPipe);
    libc.setPipeSize(stdoutPipe[1], PIPE_BYTES);
    libc.setPipeSize(stderrPipe[1], PIPE_BYTES);
    const pid = libc.posixSpawn({
      path: options.path,
      argv: options.argv,
      env: envStrings(options.env),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      stdio: [
        stdinPipe
          ? { kind: "fd", fd: stdinPipe[0] }
          : { kind: "open", path: "/dev/null", flags: LINUX.O_RDONLY },
        { kind: "fd", fd: stdoutPipe[1] },
        { kind: "fd", fd: stderrPipe[1] },
      ],
    });
    // The child has its copies; ours of its ends would hide EOF.
    closeQuietly([stdinPipe?.[0], stdoutPipe[1], stderrPipe[1]].filter((fd) => fd !== undefined));
    return {
      pid,
      status: waitForExit(pid),
      stdin: stdinPipe ? new FdStream(stdinPipe[1]) : null,
      stdout: new FdStream(stdoutPipe[0]),
      stderr: new FdStream(stderrPipe[0]),
    };
  } catch (e) {
    closeQuietly(opened);
    throw e;
  }
}

/** Options for {@link spawnOnTerminal}. */
export interface SpawnOnTerminalOptions {
  /** Executable path (resolved already). */
  path: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** Complete environment. */
  env: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** The terminal's slave device, e.g. `/dev/pts/3`. */
  slavePath: string;
}

/**
 * Starts a child in a new session whose stdin, stdout and stderr are the terminal `slavePath`,
 * opened after setsid so it becomes the controlling terminal.
 */
export function spawnOnTerminal(options: SpawnOnTerminalOptions): SpawnedChild {
  const pid = libc.posixSpawn({
    path: options.path,
    argv: options.argv,
    env: envStrings(options.env),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdio: [
      { kind: "open", path: options.slavePath, flags: LINUX.O_RDWR },
      { kind: "fd", fd: 0 },
      { kind: "fd", fd: 0 },
    ],
  });
  return { pid, status: waitForExit(pid) };
}
