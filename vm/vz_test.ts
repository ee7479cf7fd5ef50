/**
 * The portable part of the VZ backend on Linux: the sockets whose fds the framework gets, and
 * the connections Deno keeps (console, agent), made and used for real.
 */

import { join } from "node:path";
import { assert, assertEquals } from "../tests/_assert.ts";
import * as libc from "../ffi/libc.ts";
import { VmError } from "./errors.ts";
import { connectDevices } from "./vz.ts";
import { vzConfig } from "./vz_config.ts";
import type { NetConfig } from "./types.ts";

function machine(dir: string, net?: NetConfig) {
  return vzConfig({
    kernel: "/a/Image",
    initrd: "/a/initramfs.img",
    cmdline: "console=hvc0",
    cpus: 1,
    memoryMiB: 512,
    accel: "hvf",
    disk: { kind: "nbd", socket: join(dir, "nbd.sock"), exportName: "root" },
    agentSocket: join(dir, "agent.sock"),
    consoleLog: join(dir, "console.log"),
    ...(net ? { net } : {}),
  }, {
    limits: { minCpus: 1, maxCpus: 4, minMemory: 2 ** 27, maxMemory: 2 ** 33 },
    consoleSocket: join(dir, "console.sock"),
  }).vz;
}

async function readFd(fd: number, n: number): Promise<string> {
  libc.setNonBlocking(fd, true);
  const buf = new Uint8Array(n);
  let got = 0;
  for (let i = 0; i < 2000 && got < n; i++) {
    const r = libc.readNonBlocking(fd, buf.subarray(got));
    if (r === null) await new Promise((resolve) => setTimeout(resolve, 5));
    else if (r === 0) break;
    else got += r;
  }
  return new TextDecoder().decode(buf.subarray(0, got));
}

Deno.test("connectDevices - console and agent: fds for the framework, Deno conns for us", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const devices = await connectDevices(machine(dir));
    // The guest's console output (written by the framework to its fd) reaches our conn.
    libc.writeNonBlocking(devices.fds.serialPorts[0]!, new TextEncoder().encode("Linux version"));
    const buf = new Uint8Array(64);
    const n = await devices.consoleConn.read(buf);
    assertEquals(new TextDecoder().decode(buf.subarray(0, n!)), "Linux version");
    // Our agent bytes reach the framework's fd for the console port.
    await devices.agentConn.write(new TextEncoder().encode("HELLO"));
    assertEquals(await readFd(devices.fds.consolePorts[0]!, 5), "HELLO");
    // The socket files are gone once connected: nobody else can attach.
    for (const name of ["console.sock", "agent.sock"]) {
      assertEquals(await Deno.stat(join(dir, name)).then(() => "there", () => "gone"), "gone");
    }
    // Closing the framework's ends ends our console stream.
    devices.closeFds();
    assertEquals(await devices.consoleConn.read(buf), null);
    devices.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectDevices - the network: the VM borrows one end of the stack's socket pair", async () => {
  const dir = await Deno.makeTempDir();
  const [stack, vmEnd] = libc.unixDatagramPair();
  try {
    const devices = await connectDevices(machine(dir, { transport: "pair", fd: vmEnd }));
    // The framework gets that very socket: a frame it sends is one datagram at the stack's end.
    assertEquals(devices.fds.network, [vmEnd]);
    const frame = new Uint8Array(9000).fill(7);
    libc.sendNonBlocking(vmEnd, frame);
    const buf = new Uint8Array(65536);
    let n: number | null = null;
    for (let i = 0; i < 200 && n === null; i++) {
      n = libc.receiveNonBlocking(stack, buf);
      if (n === null) await new Promise((r) => setTimeout(r, 5));
    }
    assertEquals(n, frame.length);
    // Borrowed: the machine's end of life closes the console and agent fds, not the network's.
    devices.closeFds();
    devices.close();
    assert(libc.isOpen(vmEnd), "the network's fd was closed by the VM side");
  } finally {
    libc.close(stack);
    libc.close(vmEnd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectDevices - a network on a socket path is refused, nothing left open", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const err = await connectDevices(machine(dir, { socket: join(dir, "net.sock") })).then(
      () => undefined,
      (e) => e,
    );
    assert(err instanceof VmError && err.code === "invalid_config", String(err));
    assertEquals(
      err.message,
      "Cannot give the VM a network: the vz backend takes one end of a datagram socket pair",
    );
    // The console listener was closed: connecting to it now fails.
    const again = await Deno.connect({ transport: "unix", path: join(dir, "console.sock") }).then(
      (c) => (c.close(), "connected"),
      () => "refused",
    );
    assertEquals(again, "refused");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
