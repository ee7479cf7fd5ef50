import { assertEquals } from "../tests/_assert.ts";
import { StopClock } from "./idle.ts";

Deno.test("StopClock: idle counts from the last moment a client was connected", () => {
  const c = new StopClock(0, { idleMs: 1000 });
  assertEquals(c.observe(0, 500), undefined);
  assertEquals(c.observe(1, 900), undefined); // a client came
  assertEquals(c.observe(0, 1500), undefined); // 600 ms since it was seen
  assertEquals(c.observe(0, 1899), undefined);
  assertEquals(c.observe(0, 1900), "idle timeout");
});

Deno.test("StopClock: a connected client never makes it idle; the lifetime still ends it", () => {
  const c = new StopClock(100, { idleMs: 50, lifetimeMs: 10_000 });
  for (let t = 100; t < 10_100; t += 500) assertEquals(c.observe(1, t), undefined);
  assertEquals(c.observe(1, 10_100), "lifetime timeout");
});

Deno.test("StopClock: nothing to watch without options", () => {
  const c = new StopClock(0, {});
  assertEquals(c.active, false);
  assertEquals(c.observe(0, 1e12), undefined);
  assertEquals(new StopClock(0, { idleMs: 30 }).checkEveryMs, 30);
  assertEquals(new StopClock(0, { idleMs: 600_000 }).checkEveryMs, 1000);
});
