import { assertEquals } from "../tests/_assert.ts";
import { encodeStructuredError, extentsToDescriptors } from "./reply.ts";
import { ReplyType } from "./wire.ts";

Deno.test("extentsToDescriptors - merges, clips, caps, and never returns nothing", () => {
  const hz = { hole: true, zero: true };
  const d = { hole: false, zero: false };
  assertEquals(
    extentsToDescriptors(
      [{ length: 10, ...d }, { length: 5, ...d }, { length: 100, ...hz }],
      20,
      8,
    ),
    [[15, 0], [5, 3]],
  );
  assertEquals(extentsToDescriptors([{ length: 10, ...d }, { length: 10, ...hz }], 20, 1), [[
    10,
    0,
  ]]);
  assertEquals(extentsToDescriptors([], 7, 8), [[7, 0]]);
  assertEquals(extentsToDescriptors([{ length: 0, ...d }], 7, 8), [[7, 0]]);
});

Deno.test("encodeStructuredError - layout, and messages capped at 4096 bytes", () => {
  const cookie = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const b = encodeStructuredError(cookie, 22, "bad");
  const v = new DataView(b.buffer);
  assertEquals(v.getUint32(0), 0x668e33ef);
  assertEquals(v.getUint16(4), 1); // DONE
  assertEquals(v.getUint16(6), ReplyType.ERROR);
  assertEquals(b.subarray(8, 16), cookie);
  assertEquals(v.getUint32(16), 6 + 3);
  assertEquals([v.getUint32(20), v.getUint16(24)], [22, 3]);
  assertEquals(new TextDecoder().decode(b.subarray(26)), "bad");
  const long = encodeStructuredError(cookie, 5, "x".repeat(10_000));
  assertEquals(new DataView(long.buffer).getUint16(24), 4096);
  assertEquals(long.length, 20 + 6 + 4096);
});
