/**
 * Unix socket file descriptors made with libc, for APIs that take an fd (macOS's
 * `NSFileHandle initWithFileDescriptor:`), on Linux and macOS.
 *
 * Deno cannot adopt a raw fd, so the pattern is: Deno listens (`Deno.listen` with
 * `transport: "unix"`, or `Deno.listenDatagram`) and owns its end as a normal Deno object; this
 * module `connect()`s the other end and hands the fd to whoever needs it (the framework, which
 * closes it when done).
 *
 * The socket ABI differs by OS; {@linkcode SOCKET_ABI} holds both, and {@linkcode sockaddrUn}
 * is pure so the macOS layout (`sun_len` byte, 104-byte path) is tested on Linux.
 *
 * @module
 */

import { type HostOs, hostOs, openLibrary } from "./platform.ts";

/** Socket constants and `struct sockaddr_un` layout per OS. */
export const SOCKET_ABI = {
  linux: {
    AF_UNIX: 1,
    SOCK_STREAM: 1,
    SOCK_DGRAM: 2,
    SOL_SOCKET: 1,
    SO_SNDBUF: 7,
    SO_RCVBUF: 8,
    /** `sun_path` bytes (the NUL included). */
    SUN_PATH: 108,
    /** `struct sockaddr_un` starts with `sa_family_t sun_family` (2 bytes). */
    LENGTH_BYTE: false,
    /** The function returning `&errno`. */
    ERRNO_FN: "__errno_location",
  },
  darwin: {
    AF_UNIX: 1,
    SOCK_STREAM: 1,
    SOCK_DGRAM: 2,
    SOL_SOCKET: 0xffff,
    SO_SNDBUF: 0x1001,
    SO_RCVBUF: 0x1002,
    SUN_PATH: 104,
    /** BSD: `u_char sun_len; sa_family_t sun_family` (1 byte each). */
    LENGTH_BYTE: true,
    ERRNO_FN: "__error",
  },
} as const;

/** The longest socket path (bytes, without the NUL) on `os`. */
export function maxSocketPath(os: HostOs): number {
  return SOCKET_ABI[os].SUN_PATH - 1;
}

/** A socket call failed. */
export class SocketError extends Error {
  /** The failing call (`socket`, `connect`, …). */
  readonly call: string;
  /** errno of the failure (the OS's numbering). */
  readonly errno: number;
  /** Always `socket_failed`. */
  readonly code = "socket_failed";
  constructor(call: string, errno: number, message: string) {
    super(message);
    this.name = "SocketError";
    this.call = call;
    this.errno = errno;
  }
}

/**
 * The bytes of a `struct sockaddr_un` for `path` on `os` (what `bind`/`connect` take).
 *
 * @throws {RangeError} when the path is too long for the OS.
 */
export function sockaddrUn(path: string, os: HostOs): Uint8Array<ArrayBuffer> {
  const abi = SOCKET_ABI[os];
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > maxSocketPath(os) || bytes.includes(0)) {
    throw new RangeError(
      `Cannot use ${path} as a socket path: it must be 1-${maxSocketPath(os)} bytes on ${os}`,
    );
  }
  const size = 2 + bytes.length + 1;
  const out = new Uint8Array(new ArrayBuffer(size));
  if (abi.LENGTH_BYTE) {
    out[0] = size;
    out[1] = abi.AF_UNIX;
  } else {
    new DataView(out.buffer).setUint16(0, abi.AF_UNIX, true);
  }
  out.set(bytes, 2);
  return out;
}

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

type SocketLib = Deno.DynamicLibrary<
  typeof SYMBOLS & { errno: Deno.ForeignFunction<[], "pointer"> }
>["symbols"];

let lib: { os: HostOs; symbols: SocketLib } | undefined;

function socketLib(): { os: HostOs; symbols: SocketLib } {
  if (lib) return lib;
  const os = hostOs();
  if (!os) throw new SocketError("socket", 0, `Cannot make Unix sockets on ${Deno.build.os}`);
  const symbols = openLibrary("libc", {
    ...SYMBOLS,
    errno: { name: SOCKET_ABI[os].ERRNO_FN, parameters: [], result: "pointer" },
  }).symbols as SocketLib;
  lib = { os, symbols };
  return lib;
}

function fail(call: string, what: string): never {
  const { symbols } = socketLib();
  const p = symbols.errno() as Deno.PointerValue;
  const errno = p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
  const text = symbols.strerror(errno);
  const reason = text === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(text);
  throw new SocketError(call, errno, `Cannot ${call} ${what}: ${reason}`);
}

/** Options of {@linkcode connectUnixSocket}. */
export interface UnixSocketOptions {
  /** `stream` (SOCK_STREAM) or `dgram` (SOCK_DGRAM). */
  type: "stream" | "dgram";
  /** Bind to this path first (a datagram peer replies to it). Removed first if it exists. */
  bind?: string;
  /** SO_SNDBUF in bytes. */
  sendBuffer?: number;
  /** SO_RCVBUF in bytes. */
  receiveBuffer?: number;
}

/**
 * A socket connected to the Unix socket `path`; returns its fd, which the caller owns (hand it
 * to an API that closes it, or {@linkcode closeFd} it).
 *
 * @throws {SocketError} with the OS's message when a call fails.
 */
export function connectUnixSocket(path: string, options: UnixSocketOptions): number {
  const { os, symbols } = socketLib();
  const abi = SOCKET_ABI[os];
  const address = sockaddrUn(path, os);
  const local = options.bind === undefined ? undefined : sockaddrUn(options.bind, os);
  const fd = symbols.socket(
    abi.AF_UNIX,
    options.type === "stream" ? abi.SOCK_STREAM : abi.SOCK_DGRAM,
    0,
  );
  if (fd < 0) fail("create", `a Unix ${options.type} socket`);
  try {
    const setInt = (name: number, value: number, label: string) => {
      const v = new Int32Array([value]);
      if (symbols.setsockopt(fd, abi.SOL_SOCKET, name, v, 4) < 0) fail("set", label);
    };
    if (options.sendBuffer !== undefined) setInt(abi.SO_SNDBUF, options.sendBuffer, "SO_SNDBUF");
    if (options.receiveBuffer !== undefined) {
      setInt(abi.SO_RCVBUF, options.receiveBuffer, "SO_RCVBUF");
    }
    if (local) {
      try {
        Deno.removeSync(options.bind!);
      } catch { /* not there */ }
      if (symbols.bind(fd, local, local.length) < 0) fail("bind", `a socket to ${options.bind}`);
    }
    if (symbols.connect(fd, address, address.length) < 0) fail("connect", `to ${path}`);
    return fd;
  } catch (err) {
    symbols.close(fd);
    throw err;
  }
}

/** `close(fd)`. */
export function closeFd(fd: number): void {
  if (socketLib().symbols.close(fd) < 0) fail("close", `fd ${fd}`);
}
