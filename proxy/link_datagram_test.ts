/**
 * DatagramLink over real Unix datagram sockets: a kernel socketpair (the shape macOS's
 * framework hands over) and a pair of path-bound sockets connected to each other (the shape of
 * QEMU's `-netdev dgram`).
 */

import { assert, assertEquals } from "../tests/_assert.ts";
import { libc } from "../ffi/mod.ts";
import { bindDatagramSocket, connectDatagramSocket, DatagramLink } from "./link.ts";
import { ARP_REQUEST, TCP_SYN } from "./wire/_test_data.ts";

/** `p`, or a rejection naming `what` after 10 s (a lost frame must fail the test, not hang it). */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after 10 s`)), 10_000);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test("DatagramLink - one frame per datagram both ways over a socketpair", async () => {
  const [fa, fb] = libc.unixDatagramPair();
  const a = new DatagramLink(fa);
  const b = new DatagramLink(fb);
  try {
    const big = new Uint8Array(9000).fill(3);
    for (const f of [ARP_REQUEST, TCP_SYN, big]) assert(a.send(f));
    await a.flush();
    // Every ready datagram comes in one batch, each whole and separate.
    const got = await b.receive();
    assertEquals(got?.length, 3);
    assertEquals(got![0], ARP_REQUEST);
    assertEquals(got![1], TCP_SYN);
    assertEquals(got![2]!.length, 9000);
    b.send(TCP_SYN);
    await b.flush();
    assertEquals(await a.receive(), [TCP_SYN]);
    // A datagram shorter than an Ethernet header is dropped; the next frame still arrives.
    assertEquals(libc.sendNonBlocking(fb, new Uint8Array(3)), 3);
    b.send(ARP_REQUEST);
    await b.flush();
    assertEquals(await a.receive(), [ARP_REQUEST]);
    assertEquals(a.dropped, 1);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("DatagramLink - a receive waits for the peer; a full socket makes the writer wait", async () => {
  const [fa, fb] = libc.unixDatagramPair();
  const a = new DatagramLink(fa, { maxQueuedBytes: 16 << 20 });
  const b = new DatagramLink(fb);
  try {
    const pending = b.receive();
    await new Promise((r) => setTimeout(r, 20));
    const frame = new Uint8Array(65534).fill(9);
    // 13 MiB: more than the socket's send buffer holds (8 MiB once the kernel doubles the 4 MiB
    // asked for), so the writer must wait for the reader instead of dropping.
    for (let i = 0; i < 200; i++) assert(a.send(frame.slice()));
    let n = (await within(pending, "first receive"))!.length;
    while (n < 200) n += (await within(b.receive(), `frame ${n + 1} of 200`))!.length;
    assertEquals(n, 200);
    await within(a.flush(), "flush");
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("DatagramLink - a peer that goes away ends the link at the next send", async () => {
  const [fa, fb] = libc.unixDatagramPair();
  const a = new DatagramLink(fa);
  const pending = a.receive();
  libc.close(fb);
  a.send(TCP_SYN);
  await within(a.flush(), "flush");
  assertEquals(await within(pending, "receive after the peer left"), null);
  a.close();
});

Deno.test("bindDatagramSocket + connectDatagramSocket - path-bound ends, as with QEMU", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-dgram-" });
  const ours = bindDatagramSocket(`${dir}/ours.sock`);
  // The peer binds its path a little later (QEMU creates its netdev after we listen).
  const connecting = connectDatagramSocket(ours, `${dir}/vm.sock`);
  await new Promise((r) => setTimeout(r, 30));
  const theirs = bindDatagramSocket(`${dir}/vm.sock`);
  libc.connectUnix(theirs, `${dir}/ours.sock`);
  assert(await connecting);
  const a = new DatagramLink(ours);
  const b = new DatagramLink(theirs);
  try {
    b.send(ARP_REQUEST);
    a.send(TCP_SYN);
    await Promise.all([a.flush(), b.flush()]);
    assertEquals(await a.receive(), [ARP_REQUEST]);
    assertEquals(await b.receive(), [TCP_SYN]);
    // Aborting a wait for a peer that never comes resolves false.
    const lonely = bindDatagramSocket(`${dir}/lonely.sock`);
    const abort = new AbortController();
    const waiting = connectDatagramSocket(lonely, `${dir}/never.sock`, { signal: abort.signal });
    abort.abort();
    assertEquals(await waiting, false);
    libc.close(lonely);
  } finally {
    a.close();
    b.close();
    await Deno.remove(dir, { recursive: true });
  }
});
