import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { DEFAULT_GUEST_MTU, GuestNetwork } from "./network.ts";
import { RunnerError } from "./errors.ts";

async function relayMtu(options: { mtu?: number }): Promise<{ device: number; stack: number }> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-guest-network-" });
  try {
    const path = join(dir, "net.sock");
    await using network = GuestNetwork.listen(path, { allowNet: true, ...options });
    // QEMU's side: the first client gets the relay.
    const client = await Deno.connect({ transport: "unix", path });
    try {
      const deadline = Date.now() + 60_000;
      while (network.relay === undefined && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert(network.relay !== undefined, "no relay after the client connected");
      return { device: network.net.mtu!, stack: network.relay.stack.mtu };
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("GuestNetwork - the device and the stack get the same MTU, default 65520", async () => {
  assertEquals(DEFAULT_GUEST_MTU, 65520);
  assertEquals(await relayMtu({}), { device: DEFAULT_GUEST_MTU, stack: DEFAULT_GUEST_MTU });
  assertEquals(await relayMtu({ mtu: 9000 }), { device: 9000, stack: 9000 });
});

Deno.test("GuestNetwork - an MTU out of range is refused before listening", () => {
  for (const mtu of [575, 65521, 1500.5]) {
    const err = assertThrows(
      () => GuestNetwork.listen("/nonexistent/net.sock", { allowNet: true, mtu }),
      `Cannot use MTU ${mtu}: expected 576 to 65520`,
    );
    assert(err instanceof RunnerError, String(err));
    assertEquals(err.code, "invalid_config");
  }
});

Deno.test("GuestNetwork datagram link: waits for the VM's socket, then relays; close without a VM", async () => {
  const { bindDatagramSocket } = await import("../proxy/mod.ts");
  const { libc } = await import("../ffi/mod.ts");
  const dir = await Deno.makeTempDir({ prefix: "shuru-guest-network-" });
  try {
    const path = join(dir, "net.sock");
    const vmSocket = join(dir, "netvm.sock");
    await using network = GuestNetwork.listen(path, { allowNet: true, link: "datagram", vmSocket });
    assertEquals(network.net, {
      transport: "dgram",
      socket: path,
      vmSocket,
      mtu: DEFAULT_GUEST_MTU,
    });
    // The VM's end appears later, as QEMU binds it while it starts.
    await new Promise((r) => setTimeout(r, 30));
    assertEquals(network.relay, undefined);
    const vm = bindDatagramSocket(vmSocket);
    try {
      const deadline = Date.now() + 5000;
      while (network.relay === undefined && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert(network.relay !== undefined, "no relay once the VM's socket was bound");
    } finally {
      libc.close(vm);
    }
    // A network whose VM never comes closes at once.
    await using lonely = GuestNetwork.listen(join(dir, "n2.sock"), {
      allowNet: true,
      link: "datagram",
    });
    await lonely.close();
    assertEquals(lonely.relay, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GuestNetwork pair link: the VM's end answers at once; close closes both ends", async () => {
  const { libc } = await import("../ffi/mod.ts");
  const { ARP_REQUEST } = await import("../proxy/wire/_test_data.ts");
  const network = GuestNetwork.listen("/unused/net.sock", { link: "pair", onError: () => {} });
  const fd = network.net.fd!;
  try {
    assertEquals(network.net, { transport: "pair", fd, mtu: DEFAULT_GUEST_MTU });
    // What VZ does with its end: one frame per datagram. The guest asks who has 10.0.2.2.
    libc.sendNonBlocking(fd, new Uint8Array(ARP_REQUEST));
    const buf = new Uint8Array(65536);
    let n: number | null = null;
    const deadline = Date.now() + 10_000;
    while (n === null && Date.now() < deadline) {
      try {
        n = libc.receiveNonBlocking(fd, buf);
      } catch { /* not ready */ }
      if (n === null) await new Promise((r) => setTimeout(r, 5));
    }
    assert(n !== null, "no answer from the stack over the pair");
    // An ARP reply (ethertype 0x0806, opcode 2) from the gateway 10.0.2.2.
    assertEquals([buf[12], buf[13], buf[20], buf[21]], [0x08, 0x06, 0x00, 0x02]);
    assertEquals([...buf.subarray(28, 32)], [10, 0, 2, 2]);
  } finally {
    await network.close();
  }
  assert(!libc.isOpen(fd), "close must close the VM's end too");
});
