/**
 * The few libc calls Deno has no API for, through Deno FFI: glibc's `libc.so.6` on Linux,
 * `libSystem.B.dylib` on macOS (the library table in `platform.ts`).
 *
 * Every wrapper checks the return value and throws {@link LibcError} carrying the errno, so callers
 * never look at raw `-1`s. Blocking calls (`poll`) exist in two forms: a synchronous one for a zero
 * timeout and an `async` one that runs on Deno's blocking thread pool, so a PTY waiting for output
 * never stalls the event loop. errno is thread-local, so it is only read after synchronous calls.
 *
 * Two sets of calls:
 *
 * - **portable** ({@linkcode PORTABLE_SYMBOLS}): the host side, on Linux and macOS: sockets,
 *   `read`/`write`/`recv`/`send`, `poll`, `kill`, `setsid`, `getrusage`. Their constants differ by
 *   OS and live in {@linkcode LIBC_ABI} and {@linkcode ERRNO_BY_OS}. None is variadic: Apple's
 *   arm64 ABI passes variadic arguments on the stack, so a variadic function (`fcntl`, `open`,
 *   `ioctl` with an argument) called through a fixed FFI signature reads garbage there. A socket
 *   is therefore never made non-blocking with `fcntl`: each call says `MSG_DONTWAIT`, and
 *   close-on-exec is `ioctl(FIOCLEX)`, which takes no argument.
 * - **Linux only** ({@linkcode LINUX_SYMBOLS}): what only the guest agent uses (PTYs,
 *   `posix_spawn` in a new session, `fcntl`, `mount`, `reboot`), with the {@linkcode LINUX}
 *   constants (x86_64 and aarch64 agree on all of them). On another OS they throw ENOSYS.
 *
 * @module
 */

import { type HostOs, hostOs, libraryPath } from "./platform.ts";
import { sockaddrUn as socketAddress, SOCKET_ABI } from "./unix_socket.ts";

/** The OS whose numbering this process uses (the guest agent is always on Linux). */
const OS: HostOs = hostOs() ?? "linux";

/** Linux constants of the Linux-only calls (x86_64 and aarch64 agree on all of them). */
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
  WNOHANG: 1,
  POSIX_SPAWN_SETSIGDEF: 0x04,
  POSIX_SPAWN_SETSIGMASK: 0x08,
  POSIX_SPAWN_SETSID: 0x80,
  MNT_DETACH: 2,
  RB_POWER_OFF: 0x4321fedc,
} as const;

/**
 * Constants of the portable calls, per OS (`<poll.h>`, `<sys/socket.h>`, `<sys/ioctl.h>`,
 * `<sys/resource.h>`); the socket constants and `struct sockaddr_un` are `SOCKET_ABI`'s.
 */
export const LIBC_ABI = {
  linux: {
    POLLIN: 0x1,
    POLLOUT: 0x4,
    POLLERR: 0x8,
    POLLHUP: 0x10,
    POLLNVAL: 0x20,
    MSG_DONTWAIT: 0x40,
    /** `_IO('T', 0x51)` in Linux's numbering. */
    FIOCLEX: 0x5451,
    WNOHANG: 1,
    RUSAGE_SELF: 0,
    /** `ru_maxrss` is in KiB. */
    MAXRSS_UNIT: 1024,
  },
  darwin: {
    POLLIN: 0x1,
    POLLOUT: 0x4,
    POLLERR: 0x8,
    POLLHUP: 0x10,
    POLLNVAL: 0x20,
    MSG_DONTWAIT: 0x80,
    /** `_IO('f', 1)`. */
    FIOCLEX: 0x20006601,
    WNOHANG: 1,
    RUSAGE_SELF: 0,
    /** `ru_maxrss` is in bytes. */
    MAXRSS_UNIT: 1,
  },
} as const;

/** {@linkcode LIBC_ABI} of this host. */
export const HOST_ABI: (typeof LIBC_ABI)[HostOs] = LIBC_ABI[OS];

/** errno names the callers act on. */
export type ErrnoName =
  | "EPERM"
  | "ENOENT"
  | "ESRCH"
  | "EINTR"
  | "EIO"
  | "EBADF"
  | "EAGAIN"
  | "EACCES"
  | "EBUSY"
  | "EEXIST"
  | "ENOTDIR"
  | "EINVAL"
  | "ENODEV"
  | "ENOSPC"
  | "ENOSYS"
  | "ENOEXEC"
  | "ECHILD"
  | "EPIPE"
  | "ENOTEMPTY"
  | "ELOOP"
  | "ENAMETOOLONG"
  | "ETXTBSY"
  | "EMSGSIZE"
  | "ENOBUFS"
  | "ENOTCONN"
  | "ECONNREFUSED";

/** errno values per OS (`<errno.h>`): EAGAIN and the network ones differ. */
export const ERRNO_BY_OS: Record<HostOs, Readonly<Record<ErrnoName, number>>> = {
  linux: {
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
  },
  darwin: {
    EPERM: 1,
    ENOENT: 2,
    ESRCH: 3,
    EINTR: 4,
    EIO: 5,
    EBADF: 9,
    EAGAIN: 35,
    EACCES: 13,
    EBUSY: 16,
    EEXIST: 17,
    ENOTDIR: 20,
    EINVAL: 22,
    ENODEV: 19,
    ENOSPC: 28,
    ENOSYS: 78,
    ENOEXEC: 8,
    ECHILD: 10,
    EPIPE: 32,
    ENOTEMPTY: 66,
    ELOOP: 62,
    ENAMETOOLONG: 63,
    ETXTBSY: 26,
    EMSGSIZE: 40,
    ENOBUFS: 55,
    ENOTCONN: 57,
    ECONNREFUSED: 61,
  },
};

/** errno values of this host, by name. */
export const ERRNO: Readonly<Record<ErrnoName, number>> = ERRNO_BY_OS[OS];

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

/**
 * Calls with the same C signature in glibc and macOS's libSystem, none of them variadic: the host
 * side's. (`nfds_t` is `unsigned long` on Linux and `unsigned int` on macOS; as a `u64` it travels
 * in a register whose low half the callee reads, on arm64 and x86_64 alike.)
 */
export const PORTABLE_SYMBOLS = {
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  poll_async: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  getpgid: { parameters: ["i32"], result: "i32" },
  setsid: { parameters: [], result: "i32" },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  sync: { parameters: [], result: "void" },
  getrusage: { parameters: ["i32", "buffer"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** `ioctl(fd, request)` for requests without an argument (FIOCLEX): no variadic part. */
  ioctl_void: { name: "ioctl", parameters: ["i32", "u64"], result: "i32" },
} as const;

/** The guest agent's calls: Linux only, or variadic (`ioctl` with an argument, `open`, `fcntl`). */
export const LINUX_SYMBOLS = {
  posix_openpt: { parameters: ["i32"], result: "i32" },
  grantpt: { parameters: ["i32"], result: "i32" },
  unlockpt: { parameters: ["i32"], result: "i32" },
  ptsname_r: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
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
  reboot: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
} as const;

/** `PORTABLE_SYMBOLS` plus errno's location, whose function has a name per libc. */
export function portableSymbols(os: HostOs): typeof PORTABLE_SYMBOLS & {
  errno_location: { name: string; parameters: []; result: "pointer" };
} {
  return {
    ...PORTABLE_SYMBOLS,
    errno_location: { name: SOCKET_ABI[os].ERRNO_FN, parameters: [], result: "pointer" },
  };
}

type Portable = Deno.DynamicLibrary<ReturnType<typeof portableSymbols>>["symbols"];
type LinuxOnly = Deno.DynamicLibrary<typeof LINUX_SYMBOLS>["symbols"];

let portable: Portable | undefined;
let linuxOnly: LinuxOnly | undefined;

/** Opens libc on first use, so importing this module costs nothing on hosts that never call it. */
function lib(): Portable {
  if (!portable) portable = Deno.dlopen(libraryPath("libc"), portableSymbols(OS)).symbols;
  return portable;
}

/**
 * The Linux-only calls (the guest agent's).
 *
 * @throws {LibcError} ENOSYS on another OS.
 */
function linux(call: string): LinuxOnly {
  if (OS !== "linux") throw new LibcError(call, ERRNO.ENOSYS, `(Linux only, not on ${OS})`);
  if (!linuxOnly) linuxOnly = Deno.dlopen(libraryPath("libc"), LINUX_SYMBOLS).symbols;
  return linuxOnly;
}

function errno(): number {
  const p = lib().errno_location();
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
  return check("posix_openpt", linux("posix_openpt").posix_openpt(flags), "/dev/ptmx");
}

/** `grantpt(fd)` then `unlockpt(fd)`: makes the slave side openable. */
export function grantAndUnlockPt(fd: number): void {
  check("grantpt", linux("grantpt").grantpt(fd), `fd ${fd}`);
  check("unlockpt", linux("unlockpt").unlockpt(fd), `fd ${fd}`);
}

/** `ptsname_r(fd)`: the path of the slave side, e.g. `/dev/pts/3`. */
export function ptsname(fd: number): string {
  const buf = new Uint8Array(128);
  const rc = linux("ptsname_r").ptsname_r(fd, buf, BigInt(buf.length));
  // ptsname_r returns the error number itself instead of setting errno.
  if (rc !== 0) throw new LibcError("ptsname_r", rc, `fd ${fd}`);
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/** Sets a terminal's window size (`TIOCSWINSZ`); the kernel sends SIGWINCH to its foreground group. */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = new Uint16Array([rows, cols, 0, 0]);
  check("ioctl TIOCSWINSZ", linux("ioctl").ioctl(fd, BigInt(LINUX.TIOCSWINSZ), ws), `fd ${fd}`);
}

/** Reads a terminal's window size (`TIOCGWINSZ`). */
export function getWindowSize(fd: number): { rows: number; cols: number } {
  const ws = new Uint16Array(4);
  check("ioctl TIOCGWINSZ", linux("ioctl").ioctl(fd, BigInt(LINUX.TIOCGWINSZ), ws), `fd ${fd}`);
  return { rows: ws[0]!, cols: ws[1]! };
}

/** `open(path, flags, mode)`; returns the fd. */
export function open(path: string, flags: number, mode = 0o666): number {
  return check("open", linux("open").open(cString(path), flags, mode), path);
}

/** `close(fd)`. */
export function close(fd: number): void {
  check("close", lib().close(fd), `fd ${fd}`);
}

/** Whether `fd` is an open file descriptor (fcntl F_GETFL succeeds). */
export function isOpen(fd: number): boolean {
  return linux("fcntl").fcntl(fd, LINUX.F_GETFL, 0) >= 0;
}

/** Sets or clears `O_NONBLOCK` on an fd. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = check("fcntl F_GETFL", linux("fcntl").fcntl(fd, LINUX.F_GETFL, 0), `fd ${fd}`);
  const next = on ? flags | LINUX.O_NONBLOCK : flags & ~LINUX.O_NONBLOCK;
  check("fcntl F_SETFL", linux("fcntl").fcntl(fd, LINUX.F_SETFL, next), `fd ${fd}`);
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
  check("reboot RB_POWER_OFF", linux("reboot").reboot(LINUX.RB_POWER_OFF));
  throw new LibcError("reboot RB_POWER_OFF", ERRNO.EINVAL, "(returned without powering off)");
}

/** `mount(source, target, fstype, flags, data)`. */
export function mount(
  source: string,
  target: string,
  options: { fstype: string; flags?: number; data?: string },
): void {
  const data = options.data === undefined ? null : cString(options.data);
  const rc = linux("mount").mount(
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
  check("umount", linux("umount2").umount2(cString(target), flags), target);
}

/** `pipe2(O_CLOEXEC)`: returns `[readEnd, writeEnd]`. */
export function pipe(): [number, number] {
  const fds = new Int32Array(2);
  check("pipe2", linux("pipe2").pipe2(fds, LINUX.O_CLOEXEC));
  return [fds[0]!, fds[1]!];
}

/** Grows a pipe's buffer (`F_SETPIPE_SZ`); returns the size granted, or null if refused. */
export function setPipeSize(fd: number, bytes: number): number | null {
  const rc = linux("fcntl").fcntl(fd, LINUX.F_SETPIPE_SZ, bytes);
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
    const rc = lib().waitpid(pid, status, HOST_ABI.WNOHANG);
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
  const l = linux("posix_spawn");
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

/** `struct sockaddr_un` for `path` on this OS, or a `LibcError` ENAMETOOLONG naming `call`. */
function unixAddress(call: string, path: string): Uint8Array<ArrayBuffer> {
  try {
    return socketAddress(path, OS);
  } catch (err) {
    if (err instanceof RangeError) throw new LibcError(call, ERRNO.ENAMETOOLONG, path);
    throw err;
  }
}

/** Marks `fd` close-on-exec with `ioctl(FIOCLEX)` (which, unlike `fcntl`, takes no argument). */
export function setCloseOnExec(fd: number): void {
  check("ioctl FIOCLEX", lib().ioctl_void(fd, BigInt(HOST_ABI.FIOCLEX)), `fd ${fd}`);
}

/** Closes `fd` after a failed setup step, keeping the step's error. */
function closeAfter<T>(fds: number[], step: () => T): T {
  try {
    return step();
  } catch (err) {
    for (const fd of fds) lib().close(fd);
    throw err;
  }
}

/**
 * A close-on-exec Unix datagram socket (`socket(AF_UNIX, SOCK_DGRAM)`). It stays blocking (macOS
 * has no `SOCK_NONBLOCK`): use {@linkcode receiveNonBlocking} and {@linkcode sendNonBlocking}.
 */
export function unixDatagramSocket(): number {
  const abi = SOCKET_ABI[OS];
  const fd = check("socket AF_UNIX SOCK_DGRAM", lib().socket(abi.AF_UNIX, abi.SOCK_DGRAM, 0));
  closeAfter([fd], () => setCloseOnExec(fd));
  return fd;
}

/** A connected pair of close-on-exec Unix datagram sockets (`socketpair`), blocking like above. */
export function unixDatagramPair(): [number, number] {
  const abi = SOCKET_ABI[OS];
  const fds = new Int32Array(2);
  check(
    "socketpair AF_UNIX SOCK_DGRAM",
    lib().socketpair(abi.AF_UNIX, abi.SOCK_DGRAM, 0, new Uint8Array(fds.buffer)),
  );
  const pair: [number, number] = [fds[0]!, fds[1]!];
  closeAfter(pair, () => pair.forEach(setCloseOnExec));
  return pair;
}

/** `bind(fd, path)` for a Unix socket. */
export function bindUnix(fd: number, path: string): void {
  const addr = unixAddress("bind", path);
  check("bind", lib().bind(fd, addr, addr.length), path);
}

/** `connect(fd, path)` for a Unix socket (a datagram socket then sends to and hears only it). */
export function connectUnix(fd: number, path: string): void {
  const addr = unixAddress("connect", path);
  check("connect", lib().connect(fd, addr, addr.length), path);
}

/**
 * `recv(fd, buf, MSG_DONTWAIT)`: the byte count (a datagram's whole size when it fits), or `null`
 * when nothing is ready. The socket itself may be blocking.
 */
export function receiveNonBlocking(fd: number, buf: Uint8Array<ArrayBuffer>): number | null {
  const n = Number(lib().recv(fd, buf, BigInt(buf.length), HOST_ABI.MSG_DONTWAIT));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return null;
  throw new LibcError("recv", e, `fd ${fd}`);
}

/**
 * `send(fd, buf, MSG_DONTWAIT)`: the bytes sent, or `0` when it would block. Other failures
 * throw; on macOS a Unix datagram socket whose peer is full fails with ENOBUFS instead of
 * blocking (and `poll` does not wait for room), so callers retry that one after a pause.
 */
export function sendNonBlocking(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(lib().send(fd, buf, BigInt(buf.length), HOST_ABI.MSG_DONTWAIT));
  if (n >= 0) return n;
  const e = errno();
  if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return 0;
  throw new LibcError("send", e, `fd ${fd}`);
}

/** Sets a socket's send or receive buffer size (`SO_SNDBUF`/`SO_RCVBUF`, capped by the kernel). */
export function setSocketBuffer(fd: number, which: "send" | "receive", bytes: number): void {
  const abi = SOCKET_ABI[OS];
  const value = new Int32Array([bytes]);
  const opt = which === "send" ? abi.SO_SNDBUF : abi.SO_RCVBUF;
  check(
    "setsockopt",
    lib().setsockopt(fd, abi.SOL_SOCKET, opt, new Uint8Array(value.buffer), 4),
    `fd ${fd}`,
  );
}

/**
 * `setsid()`: makes this process the leader of a new session (no controlling terminal, so no
 * hang-up or terminal signals reach it); returns the session id.
 *
 * @throws {LibcError} EPERM when the process already leads a process group.
 */
export function setsid(): number {
  return check("setsid", lib().setsid());
}

/**
 * This process's peak resident set size in bytes (`getrusage(RUSAGE_SELF).ru_maxrss`, which
 * Linux counts in KiB and macOS in bytes).
 */
export function peakResidentBytes(): number {
  // struct rusage: two struct timeval (16 bytes each on LP64), then `long ru_maxrss`.
  const usage = new BigInt64Array(18);
  check("getrusage", lib().getrusage(HOST_ABI.RUSAGE_SELF, new Uint8Array(usage.buffer)));
  return Number(usage[4]!) * HOST_ABI.MAXRSS_UNIT;
}
