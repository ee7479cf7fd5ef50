import { assertEquals } from "../../tests/_assert.ts";
import { ChunkedDecoder, encodeChunk, encodeLastChunk } from "./chunked.ts";
import { HttpRelayError } from "./error.ts";
import { concatBytes } from "../../io/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Decodes `wire` pushed in the given pieces; returns body, trailers and the leftover. */
function decodeSplit(wire: Uint8Array, cuts: number[]) {
  const d = new ChunkedDecoder();
  const body: Uint8Array[] = [];
  let leftover: Uint8Array = new Uint8Array(0);
  let at = 0;
  for (const cut of [...cuts, wire.length]) {
    const piece = wire.slice(at, cut);
    at = cut;
    if (d.done) {
      leftover = concatBytes([leftover, piece]);
      continue;
    }
    const r = d.push(piece);
    body.push(...r.data.map((x) => x.slice()));
    leftover = piece.slice(r.consumed);
  }
  return {
    done: d.done,
    body: dec.decode(concatBytes(body)),
    trailers: d.trailers,
    leftover: dec.decode(leftover),
  };
}

function codeOf(text: string): string {
  try {
    const d = new ChunkedDecoder();
    d.push(enc.encode(text));
    return d.done ? "done" : "incomplete";
  } catch (e) {
    if (e instanceof HttpRelayError) return e.code;
    throw e;
  }
}

const WIRE = enc.encode(
  "5\r\nhello\r\n1;name=val\r\n \r\nA \r\n0123456789\r\n0\r\nX-Sig: abc\r\nY: z\r\n\r\nNEXT",
);

Deno.test("ChunkedDecoder - every split point gives the same body, trailers and leftover", () => {
  for (let a = 0; a <= WIRE.length; a++) {
    for (let b = a; b <= WIRE.length; b += 3) {
      const r = decodeSplit(WIRE, [a, b]);
      assertEquals(r.done, true);
      assertEquals(r.body, "hello 0123456789", `cuts ${a},${b}`);
      assertEquals(r.trailers, [["X-Sig", "abc"], ["Y", "z"]]);
      assertEquals(r.leftover, "NEXT");
    }
  }
});

Deno.test("ChunkedDecoder - malformed framing is refused", () => {
  assertEquals(codeOf("zz\r\n"), "malformed-chunk");
  assertEquals(codeOf("5\nhello\r\n"), "malformed-chunk");
  assertEquals(codeOf("5\r\nhelloXX\r\n"), "malformed-chunk");
  assertEquals(codeOf("5\rhello"), "malformed-chunk");
  assertEquals(codeOf("ffffffffffffff\r\n"), "malformed-chunk");
  assertEquals(codeOf("1;" + "e".repeat(5000) + "\r\n"), "malformed-chunk");
  assertEquals(codeOf("0\r\n bad\r\n\r\n"), "obs-fold");
  assertEquals(codeOf("0\r\n" + "A: b\r\n".repeat(200) + "\r\n"), "too-many-headers");
  assertEquals(codeOf("0000000000000000000003\r\nabc\r\n0\r\n\r\n"), "done");
  assertEquals(codeOf("3\r\nab"), "incomplete");
});

Deno.test("encodeChunk / encodeLastChunk - round trip through the decoder", () => {
  const wire = concatBytes([
    encodeChunk(enc.encode("abc")),
    encodeChunk(new Uint8Array(0)),
    encodeChunk(new Uint8Array(300).fill(0x41)),
    encodeLastChunk([["T", "v"]]),
  ]);
  assertEquals(dec.decode(wire.subarray(0, 8)), "3\r\nabc\r\n");
  const r = decodeSplit(wire, []);
  assertEquals(r.body, "abc" + "A".repeat(300));
  assertEquals(r.trailers, [["T", "v"]]);
  assertEquals(dec.decode(encodeLastChunk()), "0\r\n\r\n");
});

Deno.test("ChunkedDecoder - random bytes only ever raise HttpRelayError", () => {
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const pieces = ["1", "a", "F", "0", "\r\n", "\r", "\n", ";x=y", " ", "abc", ":", "T: v"];
  for (let round = 0; round < 5000; round++) {
    let text = "";
    for (let i = rand(30); i > 0; i--) text += pieces[rand(pieces.length)];
    try {
      const d = new ChunkedDecoder();
      const bytes = enc.encode(text);
      for (let at = 0; at < bytes.length && !d.done;) {
        const step = 1 + rand(5);
        const r = d.push(bytes.subarray(at, at + step));
        at += r.consumed;
        if (r.consumed < Math.min(step, bytes.length - at + r.consumed) && !d.done) {
          throw new Error("consumed less than given before the end");
        }
      }
    } catch (e) {
      if (!(e instanceof HttpRelayError)) throw e;
    }
  }
});
