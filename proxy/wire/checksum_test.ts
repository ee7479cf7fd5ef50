import { assertEquals } from "../../tests/_assert.ts";
import { checksum, finish, sum16 } from "./checksum.ts";

Deno.test("checksum - RFC 1071 section 3 example", () => {
  // RFC 1071: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (one's complement), checksum 220d.
  const bytes = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assertEquals(checksum(bytes), 0x220d);
});

Deno.test("checksum - unrolled loop agrees with a byte-pair loop on many lengths", () => {
  let seed = 1;
  for (let len = 0; len < 200; len++) {
    const b = new Uint8Array(len);
    for (let i = 0; i < len; i++) b[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    let s = 0;
    for (let i = 0; i + 1 < len; i += 2) s += (b[i]! << 8) | b[i + 1]!;
    if (len & 1) s += b[len - 1]! << 8;
    assertEquals(finish(sum16(b)), finish(s));
  }
});

Deno.test("checksum - all-ones and all-zero buffers", () => {
  assertEquals(checksum(new Uint8Array(1000).fill(0xff)), 0);
  assertEquals(checksum(new Uint8Array(10)), 0xffff);
});
