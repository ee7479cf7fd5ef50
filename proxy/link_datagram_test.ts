/**
 * DatagramLink over real Unix datagram sockets. Deno exposes them only with `--unstable-net`,
 * so without the flag this file re-runs itself in a child `deno test --unstable-net`.
 */

import { assert, assertEquals } from "../tests/_assert.ts";
import { DatagramLink, type DatagramSocket } from "./link.ts";
import { ARP_REQUEST, TCP_SYN } from "./wire/_test_data.ts";

type Listen = (o: { transport: "unixpacket"; path: string }) => DatagramSocket;
const listenDatagram = (Deno as unknown as { listenDatagram?: Listen }).listenDatagram;

if (typeof listenDatagram === "function") {
  Deno.test("DatagramLink - one frame per datagram both ways over Unix datagram sockets", async () => {
    const dir = await Deno.makeTempDir({ prefix: "shuru-dgram-" });
    const p = (n: string) => ({ transport: "unixpacket" as const, path: `${dir}/${n}` });
    // Each side receives on one socket and sends from another (a pending receive makes a
    // send on the same socket fail with "Busy").
    const aRx = listenDatagram(p("a-rx")), aTx = listenDatagram(p("a-tx"));
    const bRx = listenDatagram(p("b-rx")), bTx = listenDatagram(p("b-tx"));
    const a = new DatagramLink({ receive: aRx, send: aTx, peer: p("b-rx") });
    const b = new DatagramLink({ receive: bRx, send: bTx, peer: p("a-rx") });
    try {
      const big = new Uint8Array(9000).fill(3);
      for (const f of [ARP_REQUEST, TCP_SYN, big]) assert(a.send(f));
      await a.flush();
      assertEquals(await b.receive(), [ARP_REQUEST]);
      assertEquals(await b.receive(), [TCP_SYN]);
      assertEquals((await b.receive())![0]!.length, 9000);
      b.send(TCP_SYN);
      await b.flush();
      assertEquals(await a.receive(), [TCP_SYN]);
      // A datagram shorter than an Ethernet header is dropped, the next frame still arrives.
      await bTx.send(new Uint8Array(3), p("a-rx"));
      b.send(ARP_REQUEST);
      await b.flush();
      assertEquals(await a.receive(), [ARP_REQUEST]);
    } finally {
      a.close();
      b.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
} else {
  Deno.test("DatagramLink - (re-run with --unstable-net, which Unix datagram sockets need)", async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", "--unstable-net", new URL(import.meta.url).pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert(out.success, `child deno test --unstable-net failed:\n${text}`);
    assert(text.includes("1 passed"), text);
  });
}
