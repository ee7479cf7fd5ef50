import { assert, assertEquals } from "../tests/_assert.ts";
import { isStatDead, linuxStartTime, parseStatStartTime } from "./process_linux.ts";

Deno.test("parseStatStartTime handles command names with spaces and parentheses", () => {
  const rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
  assertEquals(parseStatStartTime(`123 (qemu) ${rest}`), 424242);
  assertEquals(parseStatStartTime(`123 (a (b) c) ${rest}`), 424242);
  assertEquals(parseStatStartTime("garbage"), undefined);
});

Deno.test("isStatDead: zombies and dead processes count as gone", () => {
  const rest = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
  assert(isStatDead(`123 (deno) Z ${rest}`));
  assert(isStatDead(`123 (a) b) X ${rest}`));
  assert(!isStatDead(`123 (a) Z) S ${rest}`));
});

Deno.test("linuxStartTime: field 22 of a live process, nothing for a reaped one", async () => {
  const stat = await Deno.readTextFile("/proc/self/stat");
  assertEquals(await linuxStartTime(Deno.pid), parseStatStartTime(stat));
  const child = new Deno.Command("true").spawn();
  await child.status;
  assertEquals(await linuxStartTime(child.pid), undefined);
});
