/**
 * The few libc calls Deno has no API for, through Deno FFI (Linux, glibc or musl `libc.so.6`).
 *
 * Every wrapper checks the return value and throws {@link LibcError} carrying the errno, so callers
 * never look at raw `-1`s. Blocking calls (`poll`) exist in two forms: a synchronous one for a zero
 * timeout and an `async` one that runs on Deno's blocking thread pool, so a PTY waiting for output
 * never stalls the event loop. errno is thread-local, so it is only read after synchronous calls.
 *
 * Constants are the Linux generic values, identical on x86_64 and aarch64.
 *
 * @module
 */

import { libraryPath } from "./platform.ts";

/** Linux constants used by the wrappers (x86_64 and aarch64 agree on all of them). */
export const LINUX = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_NOCTTY: 0o400,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  F_GETFL: 3,
  F_SETFL: 4,
  TIOCSWINSZ: 0x5414,
  TIOCGWINSZ: 0x5413,
  TIOCGPTN: 0x80045430,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  MS_RDONLY: 1,
  F_SETPIPE_SZ: 1031,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  WNOHANG: 1,
  POSIX_SPAWN_SETSIGDEF: 0x04,
  POSIX_SPAWN_SETSIGMASK: 0x08,
  POSIX_SPAWN_SETSID: 0x80,
  MNT_DETACH: 2,
  RB_POWER_OFF: 0x4321fedc,
  AF_UNIX: 1,
  SOCK_DGRAM: 2,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_SNDBUF: 7,
  SO_RCVBUF: 8,
} as const;

/** errno values the callers act on, with their names for messages. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENOTDIR: 20,
  EINVAL: 22,
  ENODEV: 19,
  ENOSPC: 28,
  ENOSYS: 38,
  ENOEXEC: 8,
  ECHILD: 10,
  EPIPE: 32,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENAMETOOLONG: 36,
  ETXTBSY: 26,
  EMSGSIZE: 90,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ECONNREFUSED: 111,
} as const;

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(ERRNO).map(([name, value]) => [value, name]),
);

/** Returns the symbolic name of an errno value (`"ENOENT"`), or `"errno N"` when unknown. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** A libc call failed; `errno` says why. */
export class LibcError extends Error {
  /** The failing call, e.g. `"open"`. */
  readonly call: string;
  /** The errno value the call left behind. */
  readonly errno: number;
  /** `errnoName(errno)`. */
  readonly code: string;

  /** Builds the error for `call` failing with `errno`; `what` names the object acted on. */
  constructor(call: string, errno: number, what = "") {
    const target = what ? ` ${what}` : "";
    super(`Cannot ${call}${target}: ${errnoName(errno)}`);
    this.name = "LibcError";
    this.call = call;
    this.errno = errno;
    this.code = errnoName(errno);
  }
}

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  posix_openpt: { parameters: ["i32"], result: "i32" },
  grantpt: { parameters: ["i32"], result: "i32" },
  unlockpt: { parameters: ["i32"], result: "i32" },
  ptsname_r: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  poll_async: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  posix_spawn_file_actions_addopen: {
    parameters: ["buffer", "i32", "buffer", "i32", "u32"],
    result: "i32",
  },
  posix_spawn_file_actions_addchdir_np: { parameters: ["buffer", "buffer"], result: "i32" },
  getpgid: { parameters: ["i32"], result: "i32" },
  sync: { parameters: [], result: "void" },
  reboot: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Libc | undefined;

/** Opens libc on first use, so importing this module costs nothing on hosts that never call it. */
function lib(): Libc {
  if (!libc) libc = Deno.dlopen(libraryPath("libc"), SYMBOLS).symbols;
  return libc;
}

function errno(): number {
  const p = lib().__errno_location();
  if (p === null) return 0;
  return new Deno.UnsafePointerView(p).getInt32();
}

function check(call: string, result: number, what?: string): number {
  if (result < 0) throw new LibcError(call, errno(), what);
  return result;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s` for passing to C. */
function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** `posix_openpt(flags)`: opens a new PTY master. */
export function posixOpenpt(flags: number): number {
  return check("posix_openpt", lib().posix_openpt(flags), "/dev/ptmx");
}

/** `grantpt(fd)` then `unlockpt(fd)`: makes the slave side openable. */
export function grantAndUnlockPt(fd: number): void {
  check("grantpt", lib().grantpt(fd), `fd ${fd}`);
  check("unlockpt", lib().unlockpt(fd), `fd ${fd}`);
}

/** `ptsname_r(fd)`: the path of the slave side, e.g. `/dev/pts/3`. */
export function ptsname(fd: number): string {
  const buf = new Uint8Array(128);
  const rc = lib().ptsname_r(fd, buf, BigInt(buf.length));
  // ptsname_r returns the error number itself instead of setting errno.
  if (rc !== 0) throw new LibcError("ptsname_r", rc, `fd ${fd}`);
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/** Sets a terminal's window size (`TIOCSWINSZ`); the kernel sends SIGWINCH to its foreground group. */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = new Uint16Array([rows, cols, 0, 0]);
  check("ioctl TIOCSWINSZ", lib().ioctl(fd, BigInt(LINUX.TIOCSWINSZ), ws), `fd ${fd}`);
}

/** Reads a terminal's window size (`TIOCGWINSZ`). */
export function getWindowSize(fd: number): { rows: number; cols: number } {
  const ws = new Uint16Array(4);
  check("ioctl TIOCGWINSZ", lib().ioctl(fd, BigInt(LINUX.TIOCGWINSZ), ws), `fd ${fd}`);
  return { rows: ws[0]!, cols: ws[1]! };
}

/** `open(path, flags, mode)`; returns the fd. */
export function open(path: string, flags: number, mode = 0o666): number {
  return check("open", lib().open(cString(path), flags, mode), path);
}

/** `close(fd)`. */
export function close(fd: number): void {
  check("close", lib().close(fd), `fd ${fd}`);
}

/** Whether `fd` is an open file descriptor (fcntl F_GETFL succeeds). */
export function isOpen(fd: number): boolean {
  return lib().fcntl(fd, LINUX.F_GETFL, 0) >= 0;
}

/** Sets or clears `O_NONBLOCK` on an fd. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = check("fcntl F_GETFL", lib().fcntl(fd, LINUX.F_GETFL, 0), `fd ${fd}`);
  const next = on ? flags | LINUX.O_NONBLOCK : flags & ~LINUX.O_NONBLOCK;
  check("fcntl F_SETFL", lib().fcntl(fd, LINUX.F_SETFL, next), `fd ${fd}`);
}

/**
 * `read(fd, buf)` on a non-blocking fd. Returns the byte count, `0` at end of file, or `null` when
 * nothing is ready (EAGAIN). Any other failure throws (EIO is how a PTY master reports a hung-up
 * slave; the caller decides what it means).
 */
export function readNonBlocking(fd: number, buf: Uint8Array<ArrayBuffer>): number | null {
  const n = Number(lib().read(fd, buf, BigInt(buf.length)));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return null;
  throw new LibcError("read", e, `fd ${fd}`);
}

/** `write(fd, buf)` on a non-blocking fd: the bytes written, or `0` when it would block. */
export function writeNonBlocking(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(lib().write(fd, buf, BigInt(buf.length)));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return 0;
  throw new LibcError("write", e, `fd ${fd}`);
}

/**
 * Waits up to `timeoutMs` for `events` on one fd without blocking the event loop (the wait runs
 * on a blocking-pool thread). Returns the `revents` bits, `0` on timeout.
 */
export async function pollAsync(fd: number, events: number, timeoutMs: number): Promise<number> {
  // struct pollfd { int fd; short events; short revents; }
  const pfd = new Uint8Array(8);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, events, true);
  const rc = await lib().poll_async(pfd, 1n, timeoutMs);
  // errno belongs to the pool thread; a failed poll (EINTR) is treated as a timeout and retried.
  if (rc <= 0) return 0;
  return view.getUint16(6, true);
}

/** poll(2) of one fd with a zero timeout: the `revents` ready right now (0 if none). */
export function pollNow(fd: number, events: number): number {
  const pfd = new Uint8Array(8);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, events, true);
  const rc = lib().poll(pfd, 1n, 0);
  return rc > 0 ? view.getUint16(6, true) : 0;
}

/** `kill(pid, signal)`; a negative pid addresses a process group. */
export function kill(pid: number, signal: number): void {
  check("kill", lib().kill(pid, signal), `pid ${pid}`);
}

/** `getpgid(pid)`: the process group of a process. */
export function getpgid(pid: number): number {
  return check("getpgid", lib().getpgid(pid), `pid ${pid}`);
}

/** `sync()`: flushes every filesystem's dirty data to its device. */
export function sync(): void {
  lib().sync();
}

/** `reboot(RB_POWER_OFF)`: powers the machine off at once. Only returns on failure (it throws). */
export function powerOff(): never {
  check("reboot RB_POWER_OFF", lib().reboot(LINUX.RB_POWER_OFF));
  throw new LibcError("reboot RB_POWER_OFF", ERRNO.EINVAL, "(returned without powering off)");
}

/** `mount(source, target, fstype, flags, data)`. */
export function mount(
  source: string,
  target: string,
  options: { fstype: string; flags?: number; data?: string },
): void {
  const data = options.data === undefined ? null : cString(options.data);
  const rc = lib().mount(
    cString(source),
    cString(target),
    cString(options.fstype),
    BigInt(options.flags ?? 0),
    data,
  );
  check(`mount ${options.fstype}`, rc, `${source} on ${target}`);
}

/** `umount2(target, flags)`. */
export function umount(target: string, flags = 0): void {
  check("umount", lib().umount2(cString(target), flags), target);
}

/** `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`: a counter fd used to wake a poll. */
export function eventfd(): number {
  return check("eventfd", lib().eventfd(0, LINUX.EFD_NONBLOCK | LINUX.EFD_CLOEXEC));
}

/** `pipe2(O_CLOEXEC)`: returns `[readEnd, writeEnd]`. */
export function pipe(): [number, number] {
  const fds = new Int32Array(2);
  check("pipe2", lib().pipe2(fds, LINUX.O_CLOEXEC));
  return [fds[0]!, fds[1]!];
}

/** Grows a pipe's buffer (`F_SETPIPE_SZ`); returns the size granted, or null if refused. */
export function setPipeSize(fd: number, bytes: number): number | null {
  const rc = lib().fcntl(fd, LINUX.F_SETPIPE_SZ, bytes);
  return rc < 0 ? null : rc;
}

/** How a child ended, decoded from a wait status. */
export type WaitStatus = { exited: true; code: number } | { exited: false; signal: number };

/**
 * `waitpid(pid, WNOHANG)`: the child's status if it has ended (and reaps it), else null.
 *
 * @throws LibcError ECHILD when `pid` is not our child (or was already reaped).
 */
export function tryWait(pid: number): WaitStatus | null {
  const status = new Int32Array(1);
  for (;;) {
    const rc = lib().waitpid(pid, status, LINUX.WNOHANG);
    if (rc === 0) return null;
    if (rc < 0) {
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      throw new LibcError("waitpid", e, `pid ${pid}`);
    }
    const s = status[0]!;
    const sig = s & 0x7f;
    if (sig === 0) return { exited: true, code: (s >> 8) & 0xff };
    if (sig !== 0x7f) return { exited: false, signal: sig };
    // Stopped/continued reports need WUNTRACED/WCONTINUED, which we never pass.
    return null;
  }
}

/** What one of a spawned child's fds 0-2 is. */
export type SpawnStdio =
  /** dup2 of `fd` (an fd of ours, or 0-2 to copy a child fd set up earlier in the list). */
  | { kind: "fd"; fd: number }
  /** open(2) of `path` in the child, after setsid (a tty opened on 0 becomes its ctty). */
  | { kind: "open"; path: string; flags: number };

/** Options for {@link posixSpawn}. */
export interface PosixSpawnOptions {
  /** Executable path (no PATH search). */
  path: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** `KEY=VALUE` strings. */
  env: readonly string[];
  /** Working directory of the child. */
  cwd?: string;
  /** fds 0, 1, 2 in order. */
  stdio: readonly [SpawnStdio, SpawnStdio, SpawnStdio];
}

function pointerArray(strings: readonly string[], keep: Uint8Array[]): BigUint64Array<ArrayBuffer> {
  const out = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => {
    const c = cString(s);
    keep.push(c);
    out[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c)));
  });
  return out;
}

/** glibc's posix_spawnattr_t is 336 bytes and posix_spawn_file_actions_t 80 on x86_64. */
const OPAQUE_BYTES = 1024;

/**
 * `posix_spawn` in a new session (POSIX_SPAWN_SETSID, so pid == pgid == sid), with every signal
 * reset to its default action and an empty signal mask (Deno ignores SIGPIPE, and ignored
 * dispositions survive exec). Returns the pid.
 *
 * @throws LibcError with the errno posix_spawn reported (ENOENT, EACCES, ENOEXEC, ...).
 */
export function posixSpawn(options: PosixSpawnOptions): number {
  const l = lib();
  const attr = new Uint8Array(OPAQUE_BYTES);
  const actions = new Uint8Array(OPAQUE_BYTES);
  const keep: Uint8Array[] = [];
  const call = (name: string, rc: number) => {
    if (rc !== 0) throw new LibcError(name, rc, options.path);
  };
  call("posix_spawnattr_init", l.posix_spawnattr_init(attr));
  call("posix_spawn_file_actions_init", l.posix_spawn_file_actions_init(actions));
  try {
    const emptySet = new Uint8Array(128);
    const fullSet = new Uint8Array(128).fill(0xff);
    call("posix_spawnattr_setsigmask", l.posix_spawnattr_setsigmask(attr, emptySet));
    call("posix_spawnattr_setsigdefault", l.posix_spawnattr_setsigdefault(attr, fullSet));
    const flags = LINUX.POSIX_SPAWN_SETSID | LINUX.POSIX_SPAWN_SETSIGDEF |
      LINUX.POSIX_SPAWN_SETSIGMASK;
    call("posix_spawnattr_setflags", l.posix_spawnattr_setflags(attr, flags));
    if (options.cwd !== undefined) {
      const dir = cString(options.cwd);
      keep.push(dir);
      call(
        "posix_spawn_file_actions_addchdir_np",
        l.posix_spawn_file_actions_addchdir_np(actions, dir),
      );
    }
    options.stdio.forEach((io, target) => {
      if (io.kind === "open") {
        const p = cString(io.path);
        keep.push(p);
        call(
          "posix_spawn_file_actions_addopen",
          l.posix_spawn_file_actions_addopen(actions, target, p, io.flags, 0),
        );
      } else {
        call(
          "posix_spawn_file_actions_adddup2",
          l.posix_spawn_file_actions_adddup2(actions, io.fd, target),
        );
      }
    });
    const pid = new Int32Array(1);
    const argv = pointerArray(options.argv, keep);
    const envp = pointerArray(options.env, keep);
    const rc = l.posix_spawn(pid, cString(options.path), actions, attr, argv, envp);
    if (rc !== 0) throw new LibcError("posix_spawn", rc, options.path);
    return pid[0]!;
  } finally {
    l.posix_spawn_file_actions_destroy(actions);
    l.posix_spawnattr_destroy(attr);
  }
}

/**
 * poll(2) over a prepared `struct pollfd` array (`count` entries) on a blocking-pool thread;
 * returns poll's result (the `revents` fields are filled in place), 0 on EINTR.
 */
export async function pollSetAsync(
  set: Uint8Array<ArrayBuffer>,
  count: number,
  timeoutMs: number,
): Promise<number> {
  const rc = await lib().poll_async(set, BigInt(count), timeoutMs);
  return rc < 0 ? 0 : rc;
}

/** Largest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL). */
export const MAX_UNIX_PATH = 107;

/** A `struct sockaddr_un` for `path` (Linux layout: a 2-byte family, then the path). */
function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(path);
  if (bytes.length === 0 || bytes.length > MAX_UNIX_PATH) {
    throw new LibcError("bind", ERRNO.ENAMETOOLONG, path);
  }
  const addr = new Uint8Array(2 + bytes.length + 1);
  new DataView(addr.buffer).setUint16(0, LINUX.AF_UNIX, true);
  addr.set(bytes, 2);
  return addr;
}

/** A non-blocking, close-on-exec Unix datagram socket (`socket(AF_UNIX, SOCK_DGRAM)`). */
export function unixDatagramSocket(): number {
  const type = LINUX.SOCK_DGRAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC;
  return check("socket AF_UNIX SOCK_DGRAM", lib().socket(LINUX.AF_UNIX, type, 0));
}

/** A connected pair of non-blocking Unix datagram sockets (`socketpair`). */
export function unixDatagramPair(): [number, number] {
  const fds = new Int32Array(2);
  const type = LINUX.SOCK_DGRAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC;
  check(
    "socketpair AF_UNIX SOCK_DGRAM",
    lib().socketpair(LINUX.AF_UNIX, type, 0, new Uint8Array(fds.buffer)),
  );
  return [fds[0]!, fds[1]!];
}

/** `bind(fd, path)` for a Unix socket. */
export function bindUnix(fd: number, path: string): void {
  const addr = sockaddrUn(path);
  check("bind", lib().bind(fd, addr, addr.length), path);
}

/** `connect(fd, path)` for a Unix socket (a datagram socket then sends to and hears only it). */
export function connectUnix(fd: number, path: string): void {
  const addr = sockaddrUn(path);
  check("connect", lib().connect(fd, addr, addr.length), path);
}

/** Sets a socket's send or receive buffer size (`SO_SNDBUF`/`SO_RCVBUF`, capped by the kernel). */
export function setSocketBuffer(fd: number, which: "send" | "receive", bytes: number): void {
  const value = new Int32Array([bytes]);
  const opt = which === "send" ? LINUX.SO_SNDBUF : LINUX.SO_RCVBUF;
  check(
    "setsockopt",
    lib().setsockopt(fd, LINUX.SOL_SOCKET, opt, new Uint8Array(value.buffer), 4),
    `fd ${fd}`,
  );
}
