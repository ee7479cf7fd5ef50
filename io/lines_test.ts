import { assertEquals } from "../tests/_assert.ts";
import { encodeLine, LineDecoder, LineTooLongError } from "./lines.ts";

const enc = new TextEncoder();

Deno.test("LineDecoder - lines split across pushes and several in one push", () => {
  const d = new LineDecoder({ maxLineBytes: 100 });
  assertEquals(d.push(enc.encode('{"a":')), []);
  assertEquals(d.push(enc.encode('1}\n{"b":2}\n{"c"')), [
    { kind: "line", text: '{"a":1}' },
    { kind: "line", text: '{"b":2}' },
  ]);
  assertEquals(d.bufferedBytes, 4);
  assertEquals(d.push(enc.encode(":3}\n")), [{ kind: "line", text: '{"c":3}' }]);
  assertEquals(d.bufferedBytes, 0);
});

Deno.test("LineDecoder - CRLF and empty lines", () => {
  const d = new LineDecoder({ maxLineBytes: 100 });
  assertEquals(d.push(enc.encode("\n\r\n{}\r\n\n")), [{ kind: "line", text: "{}" }]);
});

Deno.test("LineDecoder - multi-byte UTF-8 split between pushes", () => {
  const d = new LineDecoder({ maxLineBytes: 100 });
  const bytes = enc.encode('"héllo ✓"\n');
  const out = [
    ...d.push(bytes.subarray(0, 3)),
    ...d.push(bytes.subarray(3, 9)),
    ...d.push(bytes.subarray(9)),
  ];
  assertEquals(out, [{ kind: "line", text: '"héllo ✓"' }]);
});

Deno.test("LineDecoder - a too long line is reported once, dropped, and the next line is kept", () => {
  const d = new LineDecoder({ maxLineBytes: 10 });
  assertEquals(d.push(enc.encode("0123456")), []);
  assertEquals(d.push(enc.encode("789abcdef")), []);
  // Memory stays bounded while dropping.
  assertEquals(d.bufferedBytes, 0);
  assertEquals(d.push(enc.encode("xyz\nok\n")), [
    { kind: "too_long", bytes: 19 },
    { kind: "line", text: "ok" },
  ]);
});

Deno.test("LineDecoder - a line of exactly the maximum is kept", () => {
  const d = new LineDecoder({ maxLineBytes: 4 });
  assertEquals(d.push(enc.encode("abcd\nabcde\n")), [
    { kind: "line", text: "abcd" },
    { kind: "too_long", bytes: 5 },
  ]);
});

Deno.test("LineDecoder - finish returns an unterminated last line", () => {
  const d = new LineDecoder({ maxLineBytes: 10 });
  d.push(enc.encode("{}\n[1]"));
  assertEquals(d.finish(), { kind: "line", text: "[1]" });
  assertEquals(d.finish(), null);
});

Deno.test("LineDecoder - the caller may reuse its buffer after push", () => {
  const d = new LineDecoder({ maxLineBytes: 100 });
  const buf = enc.encode("abc");
  d.push(buf);
  buf.fill(0x7a);
  assertEquals(d.push(enc.encode("\n")), [{ kind: "line", text: "abc" }]);
});

Deno.test("LineDecoder - rejects a non-positive maximum", () => {
  let threw = false;
  try {
    new LineDecoder({ maxLineBytes: 0 });
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assertEquals(threw, true);
});

Deno.test("encodeLine - newlines in strings cannot break the framing", () => {
  const line = new TextDecoder().decode(encodeLine({ s: "a\nb\r\n" }));
  assertEquals(line.indexOf("\n"), line.length - 1);
  assertEquals(JSON.parse(line), { s: "a\nb\r\n" });
});

Deno.test("encodeLine - Uint8Array values become base64 strings, spliced in place", () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i * 7);
  const msg = { a: "x\n\u00e9", data: bytes, nested: [{ more: new Uint8Array([1, 2]) }], z: 1 };
  const out = encodeLine(msg);
  const text = new TextDecoder().decode(out);
  assertEquals(text.endsWith("}\n"), true);
  assertEquals(text.indexOf("\n"), text.length - 1);
  assertEquals(
    JSON.parse(text),
    { a: "x\n\u00e9", data: bytes.toBase64(), nested: [{ more: "AQI=" }], z: 1 },
  );
  // Same bytes as plain JSON of the base64 strings.
  const plain = new TextEncoder().encode(
    JSON.stringify({ ...msg, data: bytes.toBase64(), nested: [{ more: "AQI=" }] }) + "\n",
  );
  assertEquals(out, plain);
});

Deno.test("LineDecoder - overflow policy: skip reports and goes on, fail throws", () => {
  const long = enc.encode("x".repeat(11) + "\n{}\n");
  const skip = new LineDecoder({ maxLineBytes: 10 });
  assertEquals(skip.push(long), [{ kind: "too_long", bytes: 11 }, { kind: "line", text: "{}" }]);
  const fail = new LineDecoder({ maxLineBytes: 10, overflow: "fail" });
  let caught: unknown;
  try {
    fail.push(long);
  } catch (err) {
    caught = err;
  }
  assertEquals(caught instanceof LineTooLongError && caught.bytes, 11);
});
