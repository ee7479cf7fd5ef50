/**
 * Pseudo-terminals through libc: open a master/slave pair, run a process on the slave as its
 * controlling terminal in a session of its own, resize, and move bytes through the master without
 * blocking Deno's event loop.
 *
 * The master fd is read and written through {@link FdStream} (non-blocking fd, readiness waits on
 * Deno's blocking pool), so a PTY never stalls the event loop.
 *
 * The child is started with posix_spawn in a new session and opens the slave on fd 0 (then 1 and
 * 2 are copies): a session leader opening a terminal without O_NOCTTY takes it as controlling
 * terminal, so no `setsid -c` or shell is needed (see `ffi/spawn.ts`).
 *
 * @module
 */

import * as libc from "./libc.ts";
import { FdStream } from "./fd_stream.ts";
import { spawnOnTerminal } from "./spawn.ts";

const { LINUX } = libc;

/** Terminal size in character cells. */
export interface WindowSize {
  /** Rows (lines). */
  rows: number;
  /** Columns. */
  cols: number;
}

/** Validates a window size: the kernel stores each as an unsigned short. */
function checkSize(size: WindowSize): void {
  for (const [name, v] of [["rows", size.rows], ["cols", size.cols]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 0xffff) {
      throw new RangeError(`Cannot set PTY ${name} to ${v}: must be an integer from 1 to 65535`);
    }
  }
}

/** One master/slave pseudo-terminal pair owned by this process. */
export class Pty {
  /** The master side's fd (non-blocking, close-on-exec). */
  readonly masterFd: number;
  /** The slave device path, e.g. `/dev/pts/4`. */
  readonly slavePath: string;

  #master: FdStream;
  #slaveFd: number | null;

  private constructor(masterFd: number, slavePath: string, slaveFd: number) {
    this.masterFd = masterFd;
    this.slavePath = slavePath;
    this.#slaveFd = slaveFd;
    // EIO on the master means every slave fd is closed (the session is over): a normal end.
    this.#master = new FdStream(masterFd, { eioIsEof: true, onClose: () => this.releaseSlave() });
  }

  /**
   * Opens a new PTY of the given size. The slave stays open in this process (so output written
   * before the child opens it is kept) until {@link releaseSlave}.
   */
  static open(size: WindowSize): Pty {
    checkSize(size);
    const master = libc.posixOpenpt(LINUX.O_RDWR | LINUX.O_NOCTTY | LINUX.O_CLOEXEC);
    try {
      libc.grantAndUnlockPt(master);
      const path = libc.ptsname(master);
      libc.setWindowSize(master, size.rows, size.cols);
      const slave = libc.open(path, LINUX.O_RDWR | LINUX.O_NOCTTY | LINUX.O_CLOEXEC);
      return new Pty(master, path, slave);
    } catch (e) {
      libc.close(master);
      throw e;
    }
  }

  /** The output of whatever runs on the slave; ends when every slave holder has closed it. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#master.readable;
  }

  /** Changes the window size; the foreground process group on the slave gets SIGWINCH. */
  resize(size: WindowSize): void {
    checkSize(size);
    if (this.#master.closing) return;
    libc.setWindowSize(this.masterFd, size.rows, size.cols);
  }

  /** The current window size as the kernel sees it. */
  size(): WindowSize {
    return libc.getWindowSize(this.masterFd);
  }

  /** Closes this process's copy of the slave, so the master sees hang-up once the child is gone. */
  releaseSlave(): void {
    if (this.#slaveFd === null) return;
    libc.close(this.#slaveFd);
    this.#slaveFd = null;
  }

  /**
   * After the child has exited: release the slave and end {@link readable} once output stops, even
   * if a background grandchild still holds the slave (no byte for `quietMs`).
   */
  finish(quietMs = 100): void {
    this.releaseSlave();
    this.#master.endWhenQuiet(quietMs);
  }

  /** Writes all of `data` to the master (the child's input), waiting while the PTY is full. */
  write(data: Uint8Array): Promise<void> {
    return this.#master.write(data);
  }

  /** Closes the PTY: the master (after any in-flight wait returns) and the slave copy. */
  close(): void {
    this.#master.close();
    this.releaseSlave();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Options for {@link spawnPty}. */
export interface SpawnPtyOptions extends WindowSize {
  /** The complete environment of the child (TERM is set to xterm-256color unless given). */
  env: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** The executable; default `argv[0]`, which must then be a path (no PATH search here). */
  path?: string;
  /** After the exit, output ends at the first silence this long. @default 100 */
  quietMs?: number;
}

/** A process running on a PTY. */
export interface PtyProcess {
  /** Its pid, which is also its process group and session id. */
  readonly pid: number;
  /** The terminal; `pty.readable` is the process's output, `pty.write` its input. */
  readonly pty: Pty;
  /** Resolves when the process exits (the PTY is then finishing its output). */
  readonly status: Promise<libc.WaitStatus>;
}

/**
 * Starts `argv` on a new PTY in its own session, with the PTY as controlling terminal.
 *
 * @throws RangeError for a bad size or argv; LibcError from posix_spawn (ENOENT, EACCES...).
 */
export function spawnPty(argv: readonly string[], options: SpawnPtyOptions): PtyProcess {
  const path = options.path ?? argv[0];
  if (path === undefined || !path.includes("/")) {
    throw new RangeError("Cannot start a process on a PTY: give a path (argv[0] or options.path)");
  }
  const pty = Pty.open(options);
  try {
    const child = spawnOnTerminal({
      path,
      argv,
      env: { TERM: "xterm-256color", ...options.env },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      slavePath: pty.slavePath,
    });
    const status = child.status.finally(() => pty.finish(options.quietMs));
    return { pid: child.pid, pty, status };
  } catch (e) {
    pty.close();
    throw e;
  }
}
