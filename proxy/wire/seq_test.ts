import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax } from "./seq.ts";

Deno.test("seq - comparisons wrap around 2^32", () => {
  assert(seqLt(0xffffffff, 0));
  assert(seqGt(5, 0xfffffff0));
  assert(seqLe(7, 7) && seqGe(7, 7));
  assertEquals(seqDiff(3, 0xfffffffe), 5);
  assertEquals(seqDiff(0xfffffffe, 3), -5);
  assertEquals(seqMax(0xfffffff0, 2), 2);
});

Deno.test("seq - seqAdd wraps and refuses distances beyond half the space", () => {
  assertEquals(seqAdd(0xffffffff, 1), 0);
  assertEquals(seqAdd(0, -1), 0xffffffff);
  assertThrows(() => seqAdd(0, 0x80000000), "beyond half");
});
