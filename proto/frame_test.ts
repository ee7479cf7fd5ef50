import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import {
  FrameFlag,
  FrameType,
  frameTypeName,
  HEADER_LEN,
  MAX_FRAME_PAYLOAD,
  MAX_JSON_PAYLOAD,
} from "./constants.ts";
import { ConnectionError } from "./errors.ts";
import {
  decodeJson,
  encodeFrame,
  encodeJson,
  type Frame,
  FrameDecoder,
  parseHeader,
  windowIncrement,
  windowPayload,
  writeHeader,
} from "./frame.ts";

// A DATA frame on stream 3, channel 1, FIN, payload "hi" as raw bytes (the golden layout).
const GOLDEN = new Uint8Array([
  0x03,
  0x01,
  0x01,
  0x00, // type DATA, flags FIN, channel 1, reserved
  0x00,
  0x00,
  0x00,
  0x03, // stream 3
  0x00,
  0x00,
  0x00,
  0x02, // length 2
  0x68,
  0x69, // "hi"
]);

function header(
  type: number,
  opts: { flags?: number; channel?: number; stream?: number; length?: number; reserved?: number } =
    {},
): Uint8Array {
  const h = new Uint8Array(HEADER_LEN);
  writeHeader(h, 0, {
    type: type as FrameType,
    flags: opts.flags ?? 0,
    channel: opts.channel ?? 0,
    stream: opts.stream ?? 1,
    length: opts.length ?? 0,
  });
  h[3] = opts.reserved ?? 0;
  return h;
}

function decodeAll(bytes: Uint8Array): Frame[] {
  const d = new FrameDecoder();
  d.push(bytes);
  const out: Frame[] = [];
  let f;
  while ((f = d.next())) out.push(f);
  return out;
}

function assertMalformed(bytes: Uint8Array, includes: string): void {
  const err = assertThrows(() => decodeAll(bytes), includes);
  assert(err instanceof ConnectionError, "expected ConnectionError");
  assertEquals((err as ConnectionError).code, "malformed");
}

Deno.test("encodeFrame - matches the golden byte layout", () => {
  const bytes = encodeFrame({
    type: FrameType.DATA,
    flags: FrameFlag.FIN,
    channel: 1,
    stream: 3,
    payload: new TextEncoder().encode("hi"),
  });
  assertEquals(bytes, GOLDEN);
});

Deno.test("FrameDecoder - parses the golden frame", () => {
  const [f, ...rest] = decodeAll(GOLDEN);
  assertEquals(rest.length, 0);
  assertEquals(f!.type, FrameType.DATA);
  assertEquals(f!.flags, FrameFlag.FIN);
  assertEquals(f!.channel, 1);
  assertEquals(f!.stream, 3);
  assertEquals(new TextDecoder().decode(f!.payload), "hi");
});

Deno.test("FrameDecoder - space/commit reads straight into the decoder's buffer", () => {
  const d = new FrameDecoder();
  const space = d.space(GOLDEN.length);
  assert(space.length >= GOLDEN.length);
  space.set(GOLDEN);
  d.commit(GOLDEN.length);
  const f = d.next()!;
  assertEquals(f.payload.buffer, space.buffer);
  assertEquals(new TextDecoder().decode(f.payload), "hi");
  assertThrows(() => d.commit(1 << 30), "Cannot commit");
});

Deno.test("FrameDecoder - compacts a partial frame and grows for big pushes", () => {
  const d = new FrameDecoder({ maxPayload: 1024 });
  const frame = encodeFrame({
    type: FrameType.DATA,
    flags: 0,
    channel: 0,
    stream: 1,
    payload: new Uint8Array(1000).fill(7),
  });
  // Many frames pushed at once (bigger than the initial buffer), then split ones.
  const many = new Uint8Array(frame.length * 10);
  for (let i = 0; i < 10; i++) many.set(frame, i * frame.length);
  d.push(many);
  let count = 0;
  while (d.next()) count++;
  assertEquals(count, 10);
  for (let i = 0; i < 50; i++) {
    d.push(frame.subarray(0, 500));
    assertEquals(d.next(), undefined);
    d.push(frame.subarray(500));
    const f = d.next()!;
    assertEquals(f.payload.length, 1000);
    assertEquals(f.payload[999], 7);
  }
});

Deno.test("FrameDecoder - every split point of a frame sequence gives the same frames", () => {
  const frames = [
    encodeFrame({
      type: FrameType.HELLO,
      flags: 0,
      channel: 0,
      stream: 0,
      payload: encodeJson({ a: 1 }),
    }),
    GOLDEN,
    encodeFrame({
      type: FrameType.WINDOW,
      flags: 0,
      channel: 2,
      stream: 5,
      payload: windowPayload(77),
    }),
    encodeFrame({
      type: FrameType.DATA,
      flags: 0,
      channel: 0,
      stream: 7,
      payload: new Uint8Array(0),
    }),
    encodeFrame({
      type: FrameType.PING,
      flags: FrameFlag.ACK,
      channel: 0,
      stream: 0,
      payload: new Uint8Array(8).fill(9),
    }),
  ];
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let o = 0;
  for (const f of frames) {
    all.set(f, o);
    o += f.length;
  }
  const expected = decodeAll(all).map((f) => ({ ...f, payload: [...f.payload] }));
  assertEquals(expected.length, 5);
  for (let a = 0; a <= all.length; a++) {
    for (const b of [a, Math.min(all.length, a + 1), Math.min(all.length, a + 13)]) {
      const d = new FrameDecoder();
      const got: unknown[] = [];
      for (const part of [all.subarray(0, a), all.subarray(a, b), all.subarray(b)]) {
        d.push(part);
        let f;
        while ((f = d.next())) got.push({ ...f, payload: [...f.payload] });
      }
      d.finish();
      assertEquals(got, expected);
    }
  }
  assertEquals(windowIncrement(decodeAll(frames[2]!)[0]!.payload), 77);
});

Deno.test("FrameDecoder - one byte at a time", () => {
  const d = new FrameDecoder();
  let frame: Frame | undefined;
  for (const byte of GOLDEN) {
    assertEquals(frame, undefined);
    d.push(new Uint8Array([byte]));
    frame = d.next();
  }
  assertEquals(new TextDecoder().decode(frame!.payload), "hi");
  assertEquals(d.buffered, 0);
});

Deno.test("FrameDecoder - unknown frame type is malformed", () => {
  assertMalformed(header(0x00), "unknown frame type 0x00");
  assertMalformed(header(0x0a), "unknown frame type 0x0a");
  assertMalformed(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), "unknown frame type 0x47");
});

Deno.test("FrameDecoder - garbage is detected after the header, before any payload", () => {
  const d = new FrameDecoder();
  d.push(header(FrameType.DATA, { length: 0xffff_ffff }));
  assertThrows(() => d.next(), "exceeds");
});

Deno.test("FrameDecoder - reserved byte must be zero", () => {
  assertMalformed(header(FrameType.DATA, { reserved: 1 }), "reserved byte");
});

Deno.test("FrameDecoder - undefined flags are rejected per type", () => {
  assertMalformed(header(FrameType.OPEN, { flags: 1, length: 0 }), "undefined flags");
  assertMalformed(header(FrameType.DATA, { flags: 2 }), "undefined flags");
});

Deno.test("FrameDecoder - channel only on DATA/WINDOW and below 4", () => {
  assertMalformed(header(FrameType.MESSAGE, { channel: 1 }), "must be 0");
  assertMalformed(header(FrameType.DATA, { channel: 4 }), "out of range");
});

Deno.test("FrameDecoder - stream id rules for connection and stream frames", () => {
  assertMalformed(header(FrameType.OPEN, { stream: 0 }), "needs a stream id");
  assertMalformed(header(FrameType.DATA, { stream: 0 }), "needs a stream id");
  assertMalformed(header(FrameType.HELLO, { stream: 1 }), "must be stream 0");
  assertMalformed(header(FrameType.GOAWAY, { stream: 9 }), "must be stream 0");
});

Deno.test("FrameDecoder - fixed payload sizes of WINDOW and PING", () => {
  assertMalformed(header(FrameType.WINDOW, { length: 3 }), "must be 4");
  assertMalformed(header(FrameType.PING, { stream: 0, length: 9 }), "must be 8");
});

Deno.test("FrameDecoder - length caps for DATA and JSON frames", () => {
  assertMalformed(header(FrameType.DATA, { length: MAX_FRAME_PAYLOAD + 1 }), "exceeds");
  assertMalformed(header(FrameType.OPEN, { length: MAX_JSON_PAYLOAD + 1 }), "exceeds");
  const d = new FrameDecoder({ maxPayload: 1024 });
  d.push(header(FrameType.DATA, { length: 1025 }));
  assertThrows(() => d.next(), "exceeds 1024");
  // A JSON frame larger than a small maxFrame is still fine (up to the JSON cap).
  const j = new FrameDecoder({ maxPayload: 1024 });
  const big = encodeFrame({
    type: FrameType.OPEN,
    flags: 0,
    channel: 0,
    stream: 1,
    payload: encodeJson({ argv: ["x".repeat(100_000)] }),
  });
  j.push(big);
  assertEquals(j.next()?.payload.length, big.length - HEADER_LEN);
});

Deno.test("FrameDecoder - stays failed after an error", () => {
  const d = new FrameDecoder();
  d.push(header(0x7f));
  assertThrows(() => d.next(), "unknown");
  d.push(GOLDEN);
  assertThrows(() => d.next(), "unknown");
});

Deno.test("FrameDecoder - finish reports a truncated header", () => {
  const d = new FrameDecoder();
  d.push(GOLDEN.subarray(0, 5));
  assertEquals(d.next(), undefined);
  const err = assertThrows(() => d.finish(), "after 5 of 12 header bytes");
  assertEquals((err as ConnectionError).code, "truncated");
});

Deno.test("FrameDecoder - finish reports a truncated payload", () => {
  const d = new FrameDecoder();
  d.push(GOLDEN.subarray(0, 13));
  assertEquals(d.next(), undefined);
  const err = assertThrows(() => d.finish(), "DATA frame: connection ended after 1 of 2");
  assertEquals((err as ConnectionError).code, "truncated");
});

Deno.test("FrameDecoder - finish at a frame boundary is fine", () => {
  const d = new FrameDecoder();
  d.push(GOLDEN);
  d.next();
  d.finish();
});

Deno.test("parseHeader - reads every field", () => {
  const h = header(FrameType.WINDOW, { channel: 3, stream: 0xdead_beef, length: 4 });
  assertEquals(parseHeader(h, 0), {
    type: FrameType.WINDOW,
    flags: 0,
    channel: 3,
    stream: 0xdead_beef,
    length: 4,
  });
});

Deno.test("decodeJson - rejects invalid UTF-8, non-JSON and non-objects", () => {
  assertThrows(() => decodeJson(new Uint8Array([0xff, 0xfe]), FrameType.OPEN), "not UTF-8 JSON");
  assertThrows(() => decodeJson(new TextEncoder().encode("{"), FrameType.OPEN), "not UTF-8 JSON");
  assertThrows(
    () => decodeJson(new TextEncoder().encode("[1]"), FrameType.OPEN),
    "not a JSON object",
  );
  assertThrows(
    () => decodeJson(new TextEncoder().encode("null"), FrameType.CLOSE),
    "not a JSON object",
  );
  assertEquals(decodeJson(new TextEncoder().encode('{"a":1}'), FrameType.OPEN), { a: 1 });
});

Deno.test("encodeJson - refuses payloads over the JSON cap", () => {
  assertThrows(() => encodeJson({ big: "x".repeat(MAX_JSON_PAYLOAD) }), "exceed");
});

Deno.test("frameTypeName - names known and unknown types", () => {
  assertEquals(frameTypeName(FrameType.WINDOW), "WINDOW");
  assertEquals(frameTypeName(0x42), "UNKNOWN(0x42)");
});

/** xorshift32: a seeded generator so failures replay. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

Deno.test("FrameDecoder - random bytes and mutated frames only ever yield frames or ConnectionError", () => {
  const rand = rng(0x5eed);
  const valid = [
    encodeFrame({
      type: FrameType.OPEN,
      flags: 0,
      channel: 0,
      stream: 1,
      payload: encodeJson({ op: "exec" }),
    }),
    GOLDEN,
    encodeFrame({
      type: FrameType.WINDOW,
      flags: 0,
      channel: 1,
      stream: 3,
      payload: windowPayload(9),
    }),
  ];
  for (let iter = 0; iter < 3000; iter++) {
    let bytes: Uint8Array;
    if (iter % 2 === 0) {
      bytes = new Uint8Array(Math.floor(rand() * 64));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rand() * 256);
    } else {
      bytes = valid[iter % valid.length]!.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) {
        bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      }
    }
    const d = new FrameDecoder({ maxPayload: 4096 });
    try {
      d.push(bytes);
      let f;
      while ((f = d.next())) {
        assert(f.payload.length <= 4096);
        assert(f.channel < 4);
      }
      d.finish();
    } catch (err) {
      assert(err instanceof ConnectionError, `iteration ${iter}: ${err}`);
      assert(err.code === "malformed" || err.code === "truncated", err.code);
    }
  }
});
