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
  MNT_DETACH: 2,
  RB_POWER_OFF: 0x4321fedc,
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
  getpgid: { parameters: ["i32"], result: "i32" },
  sync: { parameters: [], result: "void" },
  reboot: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Libc | undefined;

/** Opens libc on first use, so importing this module costs nothing on hosts that never call it. */
function lib(): Libc {
  if (!libc) libc = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
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
