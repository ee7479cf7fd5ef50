/**
 * Tests of the fds handed to macOS's NSFileHandle, made and used for real on Linux: a stream
 * socket connected to a Deno listener (console and agent ports), a datagram socket bound and
 * connected to a Deno datagram socket (the network link, one frame per datagram).
 */

import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import * as libc from "./libc.ts";
import {
  closeFd,
  connectUnixSocket,
  maxSocketPath,
  sockaddrUn,
  SocketError,
} from "./unix_socket.ts";

Deno.test("sockaddrUn - Linux layout: 2-byte family, then the path and a NUL", () => {
  const a = sockaddrUn("/tmp/s", "linux");
  assertEquals([...a], [1, 0, ...new TextEncoder().encode("/tmp/s"), 0]);
  assertEquals(maxSocketPath("linux"), 107);
  sockaddrUn("/" + "x".repeat(106), "linux");
  assert(assertThrows(() => sockaddrUn("/" + "x".repeat(107), "linux")) instanceof RangeError);
});

Deno.test("sockaddrUn - macOS layout: length byte, family byte, 104-byte path", () => {
  const a = sockaddrUn("/tmp/s", "darwin");
  assertEquals([...a], [9, 1, ...new TextEncoder().encode("/tmp/s"), 0]);
  assertEquals(maxSocketPath("darwin"), 103);
  sockaddrUn("/" + "x".repeat(102), "darwin");
  const err = assertThrows(() => sockaddrUn("/" + "x".repeat(103), "darwin"));
  assertEquals(err.message.endsWith("it must be 1-103 bytes on darwin"), true);
});

/** Reads from a non-blocking fd until `n` bytes arrived (deadline 10 s). */
async function readFd(fd: number, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  const deadline = Date.now() + 10_000;
  while (got < n) {
    const buf = new Uint8Array(n - got);
    const r = libc.readNonBlocking(fd, buf);
    if (r === 0) break;
    if (r === null) {
      if (Date.now() > deadline) throw new Error(`read ${got} of ${n} bytes in 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    out.set(buf.subarray(0, r), got);
    got += r;
  }
  return out.subarray(0, got);
}

Deno.test("connectUnixSocket - a stream fd talks to a Deno listener both ways", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/console.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  try {
    const fd = connectUnixSocket(path, { type: "stream" });
    libc.setNonBlocking(fd, true);
    using conn = await listener.accept();
    await conn.write(new TextEncoder().encode("to the fd"));
    assertEquals(new TextDecoder().decode(await readFd(fd, 9)), "to the fd");
    assertEquals(libc.writeNonBlocking(fd, new TextEncoder().encode("to deno")), 7);
    const buf = new Uint8Array(16);
    const n = await conn.read(buf);
    assertEquals(new TextDecoder().decode(buf.subarray(0, n!)), "to deno");
    closeFd(fd);
    assertEquals(await conn.read(buf), null);
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectUnixSocket - failures carry the OS's message", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const err = assertThrows(() => connectUnixSocket(`${dir}/none.sock`, { type: "stream" }));
    assert(err instanceof SocketError, String(err));
    assertEquals(err.message, `Cannot connect to ${dir}/none.sock: No such file or directory`);
    assertEquals(err.call, "connect");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectUnixSocket - a bound datagram fd exchanges whole frames with Deno", async () => {
  // Deno's datagram sockets are unstable: the Deno side runs in a child with --unstable-net.
  const dir = await Deno.makeTempDir();
  const script = `
    import { connectUnixSocket, closeFd } from ${
    JSON.stringify(import.meta.resolve("./unix_socket.ts"))
  };
    import * as libc from ${JSON.stringify(import.meta.resolve("./libc.ts"))};
    const stack = Deno.listenDatagram({ transport: "unixpacket", path: "${dir}/stack.sock" });
    const fd = connectUnixSocket("${dir}/stack.sock", {
      type: "dgram", bind: "${dir}/vm.sock", sendBuffer: 1 << 20, receiveBuffer: 4 << 20,
    });
    // The framework's side sends the largest frame VZ allows (MTU 65535 + 14-byte Ethernet
    // header): it arrives whole, as one datagram, from vm.sock. receive() needs a buffer that
    // big: without one Deno truncates datagrams to 65507 bytes (measured, Deno 2.9.6).
    const frame = new Uint8Array(65535 + 14).map((_, i) => i % 251);
    libc.writeNonBlocking(fd, frame);
    const [got, from] = await stack.receive(new Uint8Array(65535 + 14));
    const same = got.length === frame.length && got.every((b, i) => b === frame[i]);
    // The stack answers to the address it saw; the fd reads exactly one frame.
    await stack.send(new Uint8Array([1, 2, 3]), from);
    libc.setNonBlocking(fd, true);
    const buf = new Uint8Array(100);
    let n = null;
    for (let i = 0; i < 2000 && n === null; i++) {
      n = libc.readNonBlocking(fd, buf);
      if (n === null) await new Promise((r) => setTimeout(r, 5));
    }
    console.log(JSON.stringify({ same, from: from.path, reply: [...buf.subarray(0, n ?? 0)] }));
    closeFd(fd);
    stack.close();`;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--unstable-net", script],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    assertEquals(JSON.parse(new TextDecoder().decode(out.stdout)), {
      same: true,
      from: `${dir}/vm.sock`,
      reply: [1, 2, 3],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectUnixSocket - a datagram fd cannot connect to a stream listener", async () => {
  const dir = await Deno.makeTempDir();
  const listener = Deno.listen({ transport: "unix", path: `${dir}/stream.sock` });
  try {
    const err = assertThrows(() =>
      connectUnixSocket(`${dir}/stream.sock`, { type: "dgram", bind: `${dir}/vm.sock` })
    );
    assert(err instanceof SocketError);
    assertEquals(
      err.message,
      `Cannot connect to ${dir}/stream.sock: Protocol wrong type for socket`,
    );
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});
