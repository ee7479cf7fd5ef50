/**
 * The portable part of the libc bindings: the calls the host side makes on Linux and macOS alike,
 * checked as tables for macOS and run for real on Linux.
 */

import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import * as libc from "./libc.ts";

/** Functions whose C prototype ends in `...`: wrong through a fixed signature on Apple arm64. */
const VARIADIC = new Set(["fcntl", "open", "openat", "ioctl", "prctl", "syscall", "printf"]);
/** glibc functions libSystem does not have. */
const LINUX_ONLY = new Set([
  "__errno_location",
  "eventfd",
  "pipe2",
  "accept4",
  "reboot",
  "mount",
  "umount2",
  "fallocate",
  "preadv2",
  "epoll_create1",
  "signalfd",
  "memfd_create",
]);

Deno.test("portable symbols - none variadic (but ioctl without an argument), none Linux-only", () => {
  for (const os of ["linux", "darwin"] as const) {
    for (const [key, def] of Object.entries(libc.portableSymbols(os))) {
      const name = "name" in def ? def.name : key;
      assert(os === "linux" || !LINUX_ONLY.has(name), `${name} is not in libSystem`);
      const fixedOnly = name === "ioctl" && def.parameters.length === 2;
      assert(!VARIADIC.has(name) || fixedOnly, `${key}: ${name} is variadic`);
    }
  }
  assertEquals(libc.portableSymbols("darwin").errno_location.name, "__error");
  assertEquals(libc.portableSymbols("linux").errno_location.name, "__errno_location");
});

Deno.test("ERRNO_BY_OS - the same names on both OSes, distinct values, BSD's numbering", () => {
  const { linux, darwin } = libc.ERRNO_BY_OS;
  assertEquals(Object.keys(darwin).sort(), Object.keys(linux).sort());
  for (const table of [linux, darwin]) {
    assertEquals(new Set(Object.values(table)).size, Object.keys(table).length);
  }
  assertEquals(
    [darwin.EAGAIN, darwin.EMSGSIZE, darwin.ENOBUFS, darwin.ENOTCONN, darwin.ECONNREFUSED],
    [35, 40, 55, 57, 61],
  );
  assertEquals(libc.ERRNO, linux);
  assertEquals(libc.LIBC_ABI.darwin.MSG_DONTWAIT, 0x80);
  assertEquals(libc.LIBC_ABI.darwin.FIOCLEX, 0x20006601);
});

/** The `flags:` line of `/proc/self/fdinfo/FD` (octal). */
function fdFlags(fd: number): number {
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  return parseInt(/^flags:\s+([0-7]+)/m.exec(info)![1]!, 8);
}

Deno.test("unixDatagramPair - blocking, close-on-exec (FIOCLEX); MSG_DONTWAIT never blocks", () => {
  const [a, b] = libc.unixDatagramPair();
  try {
    for (const fd of [a, b]) {
      assertEquals(fdFlags(fd) & libc.LINUX.O_CLOEXEC, libc.LINUX.O_CLOEXEC, "close-on-exec");
      assertEquals(fdFlags(fd) & libc.LINUX.O_NONBLOCK, 0, "blocking, as on macOS");
    }
    const buf = new Uint8Array(100);
    assertEquals(libc.receiveNonBlocking(b, buf), null);
    assertEquals(libc.sendNonBlocking(a, new Uint8Array([1, 2, 3])), 3);
    assertEquals(libc.sendNonBlocking(a, new Uint8Array([4])), 1);
    assertEquals(libc.receiveNonBlocking(b, buf), 3);
    assertEquals([...buf.subarray(0, 3)], [1, 2, 3]);
    assertEquals(libc.receiveNonBlocking(b, buf), 1);
    assertEquals(libc.receiveNonBlocking(b, buf), null);
    // A full peer: the send says 0 instead of blocking.
    const big = new Uint8Array(60_000);
    let sent = 0;
    while (libc.sendNonBlocking(a, big) > 0) assert(++sent < 10_000, "never filled");
    assertEquals(libc.sendNonBlocking(a, big), 0);
  } finally {
    libc.close(a);
    libc.close(b);
  }
});

Deno.test("bindUnix - the path limit of this OS is a typed ENAMETOOLONG", async () => {
  const fd = libc.unixDatagramSocket();
  try {
    const err = assertThrows(() => libc.bindUnix(fd, "/" + "x".repeat(107)));
    assert(err instanceof libc.LibcError && err.code === "ENAMETOOLONG", String(err));
    const dir = await Deno.makeTempDir();
    libc.bindUnix(fd, `${dir}/s`);
    assert((await Deno.lstat(`${dir}/s`)).isSocket);
    await Deno.remove(dir, { recursive: true });
  } finally {
    libc.close(fd);
  }
});

Deno.test("peakResidentBytes - getrusage's ru_maxrss, as VmHWM says", () => {
  const hwm = () =>
    Number(/VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
  const before = hwm();
  const peak = libc.peakResidentBytes();
  const after = hwm();
  assert(before <= peak && peak <= after, `${before} <= ${peak} <= ${after}`);
});
