import { assertEquals } from "../tests/_assert.ts";
import {
  classifyFirstBytes,
  MAX_CLIENT_HELLO_BYTES,
  MAX_FIRST_LINE_BYTES,
  readClientHello,
} from "./sniff.ts";
import { realClientHello, splitIntoRecords } from "./_test_tls.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("readClientHello - SNI from a real ClientHello, and need-more on every prefix", async () => {
  const hello = await realClientHello("API.Example.test");
  const r = readClientHello(hello);
  // As sent: normalising is the inspector's job (dns/name.ts), done once.
  assertEquals(r, { kind: "hello", serverName: "API.Example.test", end: hello.length });
  for (const cut of [1, 4, 5, 40, hello.length - 1]) {
    assertEquals(readClientHello(hello.subarray(0, cut)).kind, "need-more", `cut at ${cut}`);
  }
});

Deno.test("readClientHello - the hello is reassembled however it is split into records", async () => {
  const hello = await realClientHello("api.example.test");
  for (const sizes of [[1], [4], [5, 1, 1, 1], [40], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]]) {
    const split = splitIntoRecords(hello, sizes);
    const r = readClientHello(split);
    assertEquals(
      r,
      { kind: "hello", serverName: "api.example.test", end: split.length },
      `${sizes}`,
    );
    // Every prefix waits for more; bytes after the hello are left to the caller.
    assertEquals(readClientHello(split.subarray(0, split.length - 1)).kind, "need-more");
    const more = new Uint8Array([...split, 0x17, 3, 3, 0, 1, 0]);
    assertEquals(readClientHello(more), {
      kind: "hello",
      serverName: "api.example.test",
      end: split.length,
    });
  }
});

Deno.test("readClientHello - what hides or garbles the name is 'bad', with a reason", async () => {
  const hello = await realClientHello("api.example.test");
  const split = splitIntoRecords(hello, [10]);
  // Another record type before the hello ended.
  const alert = new Uint8Array([...split.subarray(0, 15), 0x15, 3, 3, 0, 2, 1, 0]);
  assertEquals(readClientHello(alert).kind, "bad");
  // An empty handshake record (RFC 8446 forbids them; a loop of them would never end).
  assertEquals(readClientHello(new Uint8Array([0x16, 3, 1, 0, 0])).kind, "bad");
  // Not a ClientHello (a ServerHello, type 2).
  assertEquals(readClientHello(new Uint8Array([0x16, 3, 3, 0, 4, 2, 0, 0, 0])).kind, "bad");
  // A hello declared larger than the cap.
  const big = MAX_CLIENT_HELLO_BYTES + 1;
  const r = readClientHello(
    new Uint8Array([0x16, 3, 3, 0, 4, 1, big >> 16, (big >> 8) & 255, big & 255]),
  );
  assertEquals(r.kind, "bad");
  // Many one-byte records: given up after the wire cap instead of growing without end.
  const tiny: number[] = [0x16, 3, 3, 0, 4, 1, 0, 0x7f, 0xff];
  while (tiny.length < 2 * MAX_CLIENT_HELLO_BYTES + 64) tiny.push(0x16, 3, 3, 0, 1, 0);
  assertEquals(readClientHello(new Uint8Array(tiny)).kind, "bad");
  // Record version not 3.x.
  assertEquals(readClientHello(new Uint8Array([0x16, 9, 9, 0, 10])).kind, "bad");
  // A ClientHello whose lengths lie: bad, no throw.
  assertEquals(
    readClientHello(new Uint8Array([0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff])).kind,
    "bad",
  );
});

Deno.test("readClientHello - a repeated server_name extension is 'bad'", async () => {
  const hello = await realClientHello("aaaa.test");
  const text = new TextDecoder("latin1").decode(hello);
  const at = text.indexOf("aaaa.test");
  // server_name extension: type(2) len(2) listLen(2) nameType(1) nameLen(2) name.
  const ext = at - 9;
  const extLen = (hello[ext + 2]! << 8) | hello[ext + 3]!;
  const extension = hello.slice(ext, ext + 4 + extLen);
  // The same extension twice: insert a copy and fix up the lengths.
  const twice = new Uint8Array([...hello.subarray(0, ext), ...extension, ...hello.subarray(ext)]);
  const grow = (b: Uint8Array, at: number, width: number, by: number) => {
    let v = 0;
    for (let i = 0; i < width; i++) v = (v << 8) | b[at + i]!;
    v += by;
    for (let i = width - 1; i >= 0; i--, v >>= 8) b[at + i] = v & 255;
  };
  grow(twice, 3, 2, extension.length); // record length
  grow(twice, 6, 3, extension.length); // handshake length
  // Extensions length: find it by walking the hello body (fixed fields, then three vectors).
  let p = 5 + 4 + 2 + 32;
  p += 1 + twice[p]!;
  p += 2 + ((twice[p]! << 8) | twice[p + 1]!);
  p += 1 + twice[p]!;
  grow(twice, p, 2, extension.length);
  assertEquals(readClientHello(twice), {
    kind: "bad",
    reason: "ClientHello repeats the server_name extension",
  });
});

Deno.test("classifyFirstBytes - TLS, HTTP request lines (leniently), and everything else", () => {
  assertEquals(classifyFirstBytes(new Uint8Array(0)), "need-more");
  assertEquals(classifyFirstBytes(new Uint8Array([0x16])), "tls");
  for (
    const http of [
      "GET / HTTP/1.1\r\n",
      "\r\n\r\nGET / HTTP/1.1\r\n", // empty lines first
      "FOO /x HTTP/1.0\n", // any method, bare LF
      "get  http://a/  http/1.1\r\n", // lower case, two spaces
      "PRI * HTTP/2.0\r\n",
    ]
  ) {
    assertEquals(classifyFirstBytes(enc(http)), "http", JSON.stringify(http));
  }
  for (const need of ["G", "GET / HTTP/1.1", "\r\n"]) {
    assertEquals(classifyFirstBytes(enc(need)), "need-more", JSON.stringify(need));
  }
  for (
    const other of [
      "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
      "EHLO me\r\n",
      "GET /\r\n", // HTTP/0.9 carries no Host
      "*1\r\n$4\r\nPING\r\n",
      "\x00\x00\x00\x08\x04\xd2\x16\x2f", // PostgreSQL SSLRequest
    ]
  ) {
    assertEquals(classifyFirstBytes(enc(other)), "other", JSON.stringify(other));
  }
  assertEquals(classifyFirstBytes(enc("A".repeat(MAX_FIRST_LINE_BYTES))), "other");
  let seed = 5;
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(1 + (i % 300));
    for (let k = 0; k < b.length; k++) b[k] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    if (i % 2 === 0) b[0] = 0x16;
    classifyFirstBytes(b); // must not throw
    readClientHello(b);
  }
});
