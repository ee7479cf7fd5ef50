import { assertEquals } from "../tests/_assert.ts";
import { OutputRing } from "./ring.ts";

const b = (n: number) => new Uint8Array(n);

Deno.test("OutputRing - seq numbers start at 1 and replay is after since", () => {
  const r = new OutputRing(100);
  assertEquals(r.push("stdout", b(1)).seq, 1);
  assertEquals(r.push("stderr", b(1)).seq, 2);
  assertEquals(r.push("stdout", b(1)).seq, 3);
  const replay = r.since(1);
  assertEquals(replay.chunks.map((c) => [c.seq, c.stream]), [[2, "stderr"], [3, "stdout"]]);
  assertEquals(replay.truncated, false);
  assertEquals(replay.nextSeq, 4);
  assertEquals(r.since(3).chunks, []);
});

Deno.test("OutputRing - the oldest chunks are dropped past the budget and replay says so", () => {
  const r = new OutputRing(10);
  for (let i = 0; i < 5; i++) r.push("stdout", b(4));
  assertEquals(r.bytes, 8);
  const replay = r.since(0);
  assertEquals(replay.chunks.map((c) => c.seq), [4, 5]);
  assertEquals(replay.truncated, true);
  // Asking from the oldest kept seq - 1 is not truncated.
  assertEquals(r.since(3).truncated, false);
});

Deno.test("OutputRing - one chunk larger than the budget is kept alone", () => {
  const r = new OutputRing(10);
  r.push("stdout", b(3));
  r.push("stdout", b(50));
  assertEquals(r.since(0).chunks.map((c) => c.seq), [2]);
  assertEquals(r.bytes, 50);
});

Deno.test("OutputRing - many pushes keep memory bounded (compaction)", () => {
  const r = new OutputRing(100);
  for (let i = 0; i < 10_000; i++) r.push("stdout", b(10));
  assertEquals(r.bytes, 100);
  assertEquals(r.since(0).chunks.length, 10);
  assertEquals(r.since(0).chunks[0]!.seq, 9991);
});
