import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { LinkError, MAX_FRAME_LEN, StreamLink, TracingLink } from "./link.ts";
import { PcapWriter } from "./pcap.ts";
import { ARP_REQUEST, TCP_SYN } from "./wire/_test_data.ts";

/** A connected pair of Unix stream sockets in a fresh temp dir. */
async function streamPair(): Promise<
  { a: Deno.Conn; b: Deno.Conn; dir: string; listener: Deno.Listener }
> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-link-" });
  const path = `${dir}/s`;
  const listener = Deno.listen({ transport: "unix", path });
  const [a, b] = await Promise.all([listener.accept(), Deno.connect({ transport: "unix", path })]);
  return { a, b, dir, listener };
}

async function cleanup(p: { listener: Deno.Listener; dir: string }): Promise<void> {
  p.listener.close();
  await Deno.remove(p.dir, { recursive: true });
}

Deno.test("StreamLink - frames cross a real Unix socket in order, batched", async () => {
  const p = await streamPair();
  const left = new StreamLink(p.a);
  const right = new StreamLink(p.b);
  const frames = [ARP_REQUEST, TCP_SYN, new Uint8Array(9000).fill(7)];
  for (let i = 0; i < 100; i++) for (const f of frames) assert(left.send(f));
  const got: Uint8Array[] = [];
  // Read while the writer flushes: 900 KB do not fit in the socket buffer.
  const reading = (async () => {
    while (got.length < 300) got.push(...(await right.receive())!);
  })();
  await left.flush();
  await reading;
  assertEquals(got.length, 300);
  assertEquals(got[0], ARP_REQUEST);
  assertEquals(got[298], TCP_SYN);
  assertEquals(got[299]!.length, 9000);
  left.close();
  assertEquals(await right.receive(), null);
  right.close();
  await cleanup(p);
});

Deno.test("StreamLink - the wire format is a 4-byte big-endian length then the frame", async () => {
  const p = await streamPair();
  const link = new StreamLink(p.a);
  link.send(ARP_REQUEST);
  await link.flush();
  const buf = new Uint8Array(100);
  let n = 0;
  while (n < 46) n += (await p.b.read(buf.subarray(n)))!;
  assertEquals(Array.from(buf.subarray(0, 4)), [0, 0, 0, 42]);
  assertEquals(buf.subarray(4, 46), ARP_REQUEST);
  // And a frame split across writes arrives whole.
  const framed = new Uint8Array(4 + TCP_SYN.length);
  new DataView(framed.buffer).setUint32(0, TCP_SYN.length);
  framed.set(TCP_SYN, 4);
  await p.b.write(framed.subarray(0, 3));
  const pending = link.receive();
  await new Promise((r) => setTimeout(r, 20));
  await p.b.write(framed.subarray(3));
  assertEquals(await pending, [TCP_SYN]);
  link.close();
  p.b.close();
  await cleanup(p);
});

Deno.test("StreamLink - impossible lengths are a LinkError, not an allocation", async () => {
  const p = await streamPair();
  const link = new StreamLink(p.a);
  const huge = new Uint8Array(4);
  new DataView(huge.buffer).setUint32(0, MAX_FRAME_LEN + 1);
  await p.b.write(huge);
  const err = await assertRejects(() => link.receive(), "exceeds");
  assert(err instanceof LinkError && err.code === "frame-too-large");
  link.close();
  p.b.close();
  await cleanup(p);
});

Deno.test("StreamLink - send returns false when the queue cap is reached", async () => {
  const p = await streamPair();
  const link = new StreamLink(p.a, { maxQueuedBytes: 1000 });
  assert(link.send(new Uint8Array(600)));
  assert(link.send(new Uint8Array(600)));
  assertEquals(link.send(new Uint8Array(600)), false);
  const reader = new StreamLink(p.b);
  await link.flush();
  assert(link.send(new Uint8Array(600)));
  await link.flush();
  let n = 0;
  while (n < 3) n += (await reader.receive())!.length;
  assertEquals(n, 3);
  link.close();
  reader.close();
  await cleanup(p);
});

Deno.test("TracingLink + PcapWriter - frames both ways land in a readable pcap file", async () => {
  const p = await streamPair();
  const dir = await Deno.makeTempDir({ prefix: "shuru-pcap-" });
  const pcap = new PcapWriter(`${dir}/t.pcap`);
  const link = new TracingLink(new StreamLink(p.a), (_d, f) => pcap.write(f, 1000));
  const peer = new StreamLink(p.b);
  link.send(ARP_REQUEST);
  await link.flush();
  peer.send(TCP_SYN);
  await peer.flush();
  assertEquals(await link.receive(), [TCP_SYN]);
  pcap.close();
  const bytes = await Deno.readFile(`${dir}/t.pcap`);
  assertEquals(bytes.length, 24 + 16 + 42 + 16 + 74);
  assertEquals(new DataView(bytes.buffer).getUint32(0, true), 0xa1b2c3d4);
  link.close();
  peer.close();
  await cleanup(p);
  await Deno.remove(dir, { recursive: true });
});
