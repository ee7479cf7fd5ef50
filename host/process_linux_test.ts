import { assert, assertEquals } from "../tests/_assert.ts";
import { isStatDead, parseStatStartTime, processAlive, processId } from "./process.ts";

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

Deno.test("processAlive tells this process from a finished one and from pid reuse", async () => {
  const me = await processId(Deno.pid);
  assert(me && (await processAlive(me)));
  assert(!(await processAlive({ pid: Deno.pid, startTime: me.startTime + 1 })));
  const child = new Deno.Command("true").spawn();
  await child.status;
  assert(!(await processAlive({ pid: child.pid, startTime: 0 })));
});
