import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { formatDuration, parseDuration } from "./duration.ts";

Deno.test("parseDuration: units and bare seconds", () => {
  assertEquals(parseDuration("500ms"), 500);
  assertEquals(parseDuration("30"), 30_000);
  assertEquals(parseDuration("1.5s"), 1500);
  assertEquals(parseDuration("10m"), 600_000);
  assertEquals(parseDuration("2h"), 7_200_000);
  assertEquals(parseDuration("1d"), 86_400_000);
});

Deno.test("parseDuration: rejects junk, zero and too long", () => {
  for (const bad of ["", "x", "10 minutes", "-5s", "0", "0s", "30d", "1e3"]) {
    assertThrows(() => parseDuration(bad), "Invalid duration");
  }
});

Deno.test("formatDuration", () => {
  assertEquals(formatDuration(999), "0s");
  assertEquals(formatDuration(59_000), "59s");
  assertEquals(formatDuration(61_000), "1m01s");
  assertEquals(formatDuration(3_725_000), "1h02m");
  assertEquals(formatDuration(90_000_000), "1d1h");
});
