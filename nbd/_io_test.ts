import { assertEquals, assertRejects } from "../tests/_assert.ts";
import { nbdReader, writeAll } from "./_io.ts";
import { MemoryPipe } from "./_test_utils.ts";

function ramp(n: number, start = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
}

Deno.test("BufferedReader - views span chunk boundaries and buffer compaction", async () => {
  const pipe = new MemoryPipe();
  const r = nbdReader(pipe, 16);
  // 3-byte chunks so every 5-byte view straddles chunks and the 16-byte buffer wraps.
  const all = ramp(60);
  for (let i = 0; i < all.length; i += 3) await pipe.write(all.subarray(i, i + 3));
  pipe.close();
  for (let i = 0; i < 60; i += 5) assertEquals(await r.view(5, "test"), all.subarray(i, i + 5));
  assertEquals(await r.view(5, "test"), null); // clean end of stream
});

Deno.test("BufferedReader - readInto reads large payloads directly, small ones via the buffer", async () => {
  const pipe = new MemoryPipe();
  const r = nbdReader(pipe, 64);
  await pipe.write(ramp(10));
  await pipe.write(ramp(1000, 10));
  await pipe.write(ramp(7, 1010));
  pipe.close();
  assertEquals(await r.view(4, "head"), ramp(4));
  const big = new Uint8Array(1000);
  await r.readInto(big, "big");
  assertEquals(big, ramp(1000, 4));
  const small = new Uint8Array(13);
  await r.readInto(small, "small");
  assertEquals(small, ramp(13, 1004));
});

Deno.test("BufferedReader - skip discards exactly, short streams are SHORT_READ", async () => {
  const pipe = new MemoryPipe();
  const r = nbdReader(pipe, 8);
  await pipe.write(ramp(30));
  pipe.close();
  await r.skip(25, "junk");
  assertEquals(await r.view(2, "x"), ramp(2, 25));
  const e1 = await assertRejects(() => r.view(5, "header"), "stream ended after 3 of 5 bytes");
  assertEquals((e1 as { code?: string }).code, "SHORT_READ");

  const p2 = new MemoryPipe();
  const r2 = nbdReader(p2, 8);
  await p2.write(ramp(4));
  p2.close();
  await assertRejects(() => r2.readInto(new Uint8Array(10), "payload"), "after 4 of 10");
  const p3 = new MemoryPipe();
  await p3.write(ramp(4));
  p3.close();
  await assertRejects(() => nbdReader(p3, 8).skip(10, "payload"), "6 of 10");
});

Deno.test("writeAll - keeps writing until a sink that takes a few bytes at a time has it all", async () => {
  const got: number[] = [];
  const sink = {
    write(p: Uint8Array) {
      const n = Math.min(3, p.length);
      got.push(...p.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  await writeAll(sink, ramp(20));
  assertEquals(new Uint8Array(got), ramp(20));
});
