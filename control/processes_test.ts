/**
 * Unit tests of the process table's memory caps. The small in-process backend below exists only
 * here (processes that print a given number of bytes and exit); behaviour against a real guest
 * agent is tested in tests/control_*_test.ts.
 */
import { assertEquals } from "../tests/_assert.ts";
import type { BackendProcess, ControlBackend } from "./backend.ts";
import { realClock } from "./clock.ts";
import { ProcessTable } from "./processes.ts";

function printing(bytes: number): BackendProcess {
  return {
    stdout: ReadableStream.from([new Uint8Array(bytes)]),
    stderr: null,
    write: () => Promise.resolve(),
    closeStdin: () => Promise.resolve(),
    kill: () => Promise.resolve(),
    status: Promise.resolve({ code: 0, signal: null }),
  };
}

Deno.test("ProcessTable - exited processes are forgotten by count and by kept output bytes", async () => {
  const backend = {
    spawn: (argv: string[]) => Promise.resolve(printing(Number(argv[1]))),
  } as unknown as ControlBackend;
  const table = new ProcessTable(backend, {
    ringBytes: 1000,
    maxExited: 3,
    maxExitedBytes: 1500,
    maxLive: 10,
    clock: realClock,
  });
  const run = async (n: number) => {
    const rec = await table.start(["print", String(n)], {}, "spawn");
    rec.begin(table.retire);
    await rec.done;
    return rec.pid;
  };
  await run(100);
  await run(100);
  await run(100);
  await run(100);
  // Four exited, three kept (count cap).
  assertEquals(table.list().map((r) => r.pid), ["p2", "p3", "p4"]);
  await run(1000);
  // 100 + 100 + 1000 = 1200 <= 1500 after dropping p2 for the count cap.
  assertEquals(table.list().map((r) => r.pid), ["p3", "p4", "p5"]);
  await run(1000);
  // Byte cap: after the count cap drops p3, 100 + 1000 + 1000 > 1500 drops p4, then
  // 1000 + 1000 > 1500 drops p5.
  assertEquals(table.list().map((r) => r.pid), ["p6"]);
  assertEquals(table.liveCount, 0);
});
