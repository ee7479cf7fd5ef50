/**
 * A real VM on our stack: QEMU microvm (TCG) with its virtio-net NIC on `-netdev stream` (the
 * other end a StreamLink) or `-netdev dgram` (a DatagramLink: one frame per datagram, the link a
 * macOS host uses), served by the Relay. The guest (Debian's kernel, a busybox initramfs)
 * configures itself with udhcpc, resolves through our DNS, is refused at once where the policy
 * says so, and moves 16 MiB each way to a server on the host's loopback with hashes compared.
 *
 * Nothing leaves the machine: the resolver knows only the test's names and the dialer refuses
 * anything but 127.0.0.1.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  buildGuest,
  type GuestNet,
  guestSeconds,
  qemuPrerequisite,
  runGuest,
  startServer,
  TRANSFER_SCRIPT,
} from "./_net_qemu.ts";
import {
  bindDatagramSocket,
  connectDatagramSocket,
  DatagramLink,
  type FrameLink,
  NetworkPolicy,
  Relay,
  StreamLink,
} from "../proxy/mod.ts";

const SIZE = 16 * 1024 * 1024;

/** Our end of the guest's NIC over `transport`, and what to pass to runGuest. */
function linkEnd(dir: string, transport: "stream" | "dgram"): {
  net: GuestNet;
  link: Promise<FrameLink>;
  close: () => void;
} {
  const sock = `${dir}/net.sock`;
  if (transport === "stream") {
    const listener = Deno.listen({ transport: "unix", path: sock });
    return {
      net: { kind: "stream", socketPath: sock },
      link: listener.accept().then((conn) => new StreamLink(conn)),
      close: () => listener.close(),
    };
  }
  const vmSock = `${dir}/vm.sock`;
  const fd = bindDatagramSocket(sock);
  const abort = new AbortController();
  const link = new DatagramLink(fd);
  return {
    net: { kind: "dgram", socketPath: sock, vmSocketPath: vmSock },
    link: connectDatagramSocket(fd, vmSock, { signal: abort.signal }).then((ok) => {
      if (!ok) throw new Error("QEMU never bound its datagram socket");
      return link;
    }),
    close: () => {
      abort.abort();
      link.close();
    },
  };
}

for (const transport of ["stream", "dgram"] as const) {
  Deno.test(`proxy serves a QEMU guest over -netdev ${transport}: DHCP, DNS, refusals, 16 MiB each way`, async () => {
    await guestOnOurStack(transport);
  });
}

async function guestOnOurStack(transport: "stream" | "dgram"): Promise<void> {
  const missing = await qemuPrerequisite();
  if (missing) throw new Error(missing);
  const dir = await Deno.makeTempDir({ prefix: "shuru-qemu-net-" });
  const server = await startServer(dir, SIZE);
  const end = linkEnd(dir, transport);
  const blocked: string[] = [];
  let relay: Relay | undefined;
  const serving = (async () => {
    relay = new Relay({
      link: await end.link,
      policy: new NetworkPolicy({
        allowHosts: ["api.test"],
        addHosts: { "api.test": "127.0.0.1" },
      }),
      resolve: () => Promise.resolve([]),
      dial: ({ hostname, port }) => {
        if (hostname !== "127.0.0.1") throw new Error(`test dialer refuses ${hostname}`);
        return Deno.connect({ hostname, port });
      },
      onBlocked: (line) => blocked.push(line),
    });
    await relay.run();
  })();
  try {
    const image = await buildGuest(dir, TRANSFER_SCRIPT);
    const { results, console: text } = await runGuest(image, {
      net: end.net,
      arg: `api.test:${server.port}:${server.rawPort}:checks`,
    });
    const get = (k: string) => {
      const v = results.get(k);
      if (v === undefined) {
        throw new Error(`guest printed no ${k} result; console:\n${text.slice(-4000)}`);
      }
      return v;
    };
    assertEquals(get("dhcp"), "10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3 mtu=1500");
    assertEquals(get("hello"), "hello from the host");
    assertEquals(get("denied"), "nxdomain");
    const refused = get("refused");
    // Refused by a reset, not left to time out (nc says which, whatever the guest's speed).
    assert(refused.startsWith("rc=1 reset "), refused);
    console.log(`  refusal in the guest: ${guestSeconds(refused)} s`);
    assertEquals(get("download").split(" ")[0], String(SIZE));
    assertEquals(get("upload").split(" ").slice(0, 2), [String(SIZE), server.hash]);
    assert(blocked.includes("shuru: blocked pypi.org (not in --allow-host)"), blocked.join("\n"));
    assert(blocked.some((l) => l.startsWith("shuru: blocked 10.9.9.9:80 ")), blocked.join("\n"));
    // A stream link ends when QEMU closes it; a datagram peer never says it left.
    if (transport === "dgram") end.close();
    await serving;
    const c = relay!.stack.counters;
    assertEquals([c.internalErrors, c.malformed, c.badChecksum], [0, 0, 0]);
  } finally {
    relay?.close();
    end.close();
    await serving.catch(() => {});
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
