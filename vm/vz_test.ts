/**
 * The portable part of the VZ backend on Linux: the sockets whose fds the framework gets, and
 * the connections Deno keeps (console, agent), made and used for real.
 */

import { join } from "node:path";
import { assert, assertEquals } from "../tests/assert.ts";
import * as libc from "../ffi/libc.ts";
import { VmError } from "./errors.ts";
import { connectDevices } from "./vz.ts";
import { vzConfig } from "./vz_config.ts";

function machine(dir: string, net?: string) {
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
    ...(net ? { net: { socket: net } } : {}),
  }, {
    limits: { minCpus: 1, maxCpus: 4, minMemory: 2 ** 27, maxMemory: 2 ** 33 },
    consoleSocket: join(dir, "console.sock"),
    networkLocalSocket: join(dir, "net-vm.sock"),
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

Deno.test("connectDevices - a network stack on a stream socket is refused, nothing left open", async () => {
  const dir = await Deno.makeTempDir();
  const stack = Deno.listen({ transport: "unix", path: join(dir, "net.sock") });
  try {
    const err = await connectDevices(machine(dir, join(dir, "net.sock"))).then(
      () => undefined,
      (e) => e,
    );
    assert(err instanceof VmError && err.code === "invalid_config", String(err));
    assert(
      err.message.startsWith("Cannot give the VM a network: the vz backend needs the network"),
    );
    // The console listener was closed: connecting to it now fails.
    const again = await Deno.connect({ transport: "unix", path: join(dir, "console.sock") }).then(
      (c) => (c.close(), "connected"),
      () => "refused",
    );
    assertEquals(again, "refused");
  } finally {
    stack.close();
    await Deno.remove(dir, { recursive: true });
  }
});
