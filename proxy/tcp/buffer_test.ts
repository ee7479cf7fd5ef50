import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { RingBuffer } from "./buffer.ts";

Deno.test("RingBuffer - write never exceeds capacity; read is FIFO across the wrap", () => {
  const r = new RingBuffer(10);
  assertEquals(r.write(new Uint8Array([1, 2, 3, 4, 5, 6, 7])), 7);
  assertEquals(r.read(5), new Uint8Array([1, 2, 3, 4, 5]));
  assertEquals(r.write(new Uint8Array([8, 9, 10, 11, 12, 13, 14, 15, 16])), 8);
  assertEquals(r.free, 0);
  assertEquals(r.peek(3, 4), new Uint8Array([9, 10, 11, 12]));
  assertEquals(r.read(100), new Uint8Array([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]));
  assertEquals(r.length, 0);
});

Deno.test("RingBuffer - backing store grows on demand and is released when empty", () => {
  const r = new RingBuffer(1 << 20);
  assert(r.allocated <= 4096);
  r.write(new Uint8Array(100_000).fill(7));
  assert(r.allocated >= 100_000 && r.allocated <= 1 << 20);
  assertEquals(r.peek(99_999, 10), new Uint8Array([7]));
  r.consume(100_000);
  r.release();
  assertEquals(r.allocated, 0);
  assertEquals(r.write(new Uint8Array([1])), 1);
  assertEquals(r.read(1), new Uint8Array([1]));
});

Deno.test("RingBuffer - rejects a non-positive capacity", () => {
  assertThrows(() => new RingBuffer(0), "positive integer");
});
