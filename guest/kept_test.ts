import { assertEquals } from "../tests/_assert.ts";
import { OutputLog } from "./kept.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("OutputLog - replays each stream from its own offset, in the order produced", () => {
  const log = new OutputLog(1024);
  log.push(0, bytes("abc"));
  log.push(1, bytes("ERR"));
  log.push(0, bytes("def"));
  assertEquals(log.produced, [6, 3]);
  const replay = log.since([2, 1]).map((c) => [c.stream, text(c.data)]);
  assertEquals(replay, [[0, "c"], [1, "RR"], [0, "def"]]);
  assertEquals(log.since([6, 3]), []);
});

Deno.test("OutputLog - keeps the newest bytes within its budget", () => {
  const log = new OutputLog(5);
  log.push(0, bytes("123"));
  log.push(0, bytes("456"));
  log.push(0, bytes("78"));
  // "123" was dropped; a host that has nothing gets what is left.
  assertEquals(log.since([0, 0]).map((c) => text(c.data)).join(""), "45678");
  assertEquals(log.produced[0], 8);
});
