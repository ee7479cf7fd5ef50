import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { HostError } from "./errors.ts";
import {
  processAlive,
  processId,
  processStartTime,
  selfProcessId,
  START_TIME_READERS,
} from "./process.ts";
import { darwinStartTime } from "./process_darwin.ts";
import { linuxStartTime } from "./process_linux.ts";

Deno.test("processAlive tells this process from a finished one and from pid reuse", async () => {
  const me = await selfProcessId();
  assert(await processAlive(me));
  assert(!(await processAlive({ pid: Deno.pid, startTime: me.startTime + 1 })));
  const child = new Deno.Command("true").spawn();
  await child.status;
  assertEquals(await processId(child.pid), undefined);
  assert(!(await processAlive({ pid: child.pid, startTime: 0 })));
});

Deno.test("processAlive: a zombie (exited, not yet reaped) is gone", async () => {
  // sh forks a child that exits soon, then becomes a `sleep`, which never waits for it.
  const sh = new Deno.Command("sh", {
    args: ["-c", "sleep 0.3 & echo $!; exec sleep 30"],
    stdout: "piped",
  }).spawn();
  try {
    const reader = sh.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    const zombie = Number(new TextDecoder().decode(value).trim());
    assert(zombie > 0);
    // Alive until it exits, then a zombie.
    const deadline = Date.now() + 10_000;
    while ((await processId(zombie)) !== undefined) {
      assert(Date.now() < deadline, `process ${zombie} still counts as alive after 10 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const stat = await Deno.readTextFile(`/proc/${zombie}/stat`);
    assert(/\) Z /.test(stat), `not a zombie: ${stat}`);
  } finally {
    sh.kill("SIGKILL");
    await sh.status;
    await sh.stdout.cancel().catch(() => {});
  }
});

Deno.test("processStartTime: one reader per OS, chosen by the OS; others refused", async () => {
  assertEquals(START_TIME_READERS.linux, linuxStartTime);
  assertEquals(START_TIME_READERS.darwin, darwinStartTime);
  assertEquals(
    await processStartTime(Deno.pid, { os: "linux" }),
    await linuxStartTime(Deno.pid),
  );
  for (const pid of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 2]) {
    assertEquals(await processStartTime(pid), undefined);
  }
  const err = await assertRejects(() => processStartTime(Deno.pid, { os: "windows" }));
  assert(err instanceof HostError && err.code === "unsupported_os", String(err));
  assertEquals(
    err.message,
    `Cannot tell whether process ${Deno.pid} runs: shuru does not know windows (Linux and macOS only)`,
  );
});
