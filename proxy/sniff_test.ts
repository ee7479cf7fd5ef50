import { assertEquals } from "../tests/_assert.ts";
import { SNIFF_MAX_BYTES, sniffFirstBytes } from "./sniff.ts";

/** The first bytes a real TLS client (Deno's rustls) sends to a loopback listener. */
async function realClientHello(serverName: string): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept();
  const raw = await Deno.connect({ hostname: "127.0.0.1", port });
  const handshake = Deno.startTls(raw, { hostname: serverName }).then(
    (c) => c.handshake().finally(() => c.close()),
    () => {},
  ).catch(() => {});
  const server = await accepted;
  const buf = new Uint8Array(SNIFF_MAX_BYTES);
  let got = 0;
  while (got < 5 || got < 5 + ((buf[3]! << 8) | buf[4]!)) {
    const n = await server.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  server.close();
  await handshake;
  listener.close();
  return buf.slice(0, got);
}

Deno.test("sniffFirstBytes - SNI from a real ClientHello, and need-more on every prefix", async () => {
  const hello = await realClientHello("API.Example.test");
  assertEquals(sniffFirstBytes(hello), { kind: "tls", serverName: "api.example.test" });
  for (const cut of [1, 4, 5, 40, hello.length - 1]) {
    assertEquals(sniffFirstBytes(hello.subarray(0, cut)).kind, "need-more", `cut at ${cut}`);
  }
});

Deno.test("sniffFirstBytes - HTTP Host header, port stripped; partial headers need more", () => {
  const req = new TextEncoder().encode(
    "GET /simple HTTP/1.1\r\nUser-Agent: curl/7.88.1\r\nHOST: Files.Example.test:8080\r\n\r\n",
  );
  assertEquals(sniffFirstBytes(req), { kind: "http", host: "files.example.test" });
  assertEquals(sniffFirstBytes(req.subarray(0, 30)).kind, "need-more");
  assertEquals(sniffFirstBytes(new TextEncoder().encode("GE")).kind, "need-more");
  assertEquals(
    sniffFirstBytes(new TextEncoder().encode("POST / HTTP/1.0\r\n\r\n")),
    { kind: "http" },
  );
});

Deno.test("sniffFirstBytes - other protocols and garbage are 'other' or 'tls' without a name", () => {
  assertEquals(sniffFirstBytes(new TextEncoder().encode("SSH-2.0-OpenSSH_9.2\r\n")).kind, "other");
  assertEquals(sniffFirstBytes(new Uint8Array([0x16, 9, 9, 0, 10])).kind, "other");
  // A ClientHello whose lengths lie: no name, no throw.
  const lying = new Uint8Array([0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff]);
  assertEquals(sniffFirstBytes(lying), { kind: "tls" });
  let seed = 5;
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(1 + (i % 300));
    for (let k = 0; k < b.length; k++) b[k] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    if (i % 2 === 0) b[0] = 0x16;
    sniffFirstBytes(b); // must not throw
  }
});
