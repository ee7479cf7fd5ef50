/**
 * A hung test fails with its name instead of stalling the run: `deno test --preload
 * tests/_preload.ts` (as `run-tests` and the `test` task run it) on a module whose first test
 * never finishes.
 */

import { assert, assertEquals } from "./assert.ts";
import { DeadlineError, withDeadline } from "./_deadline.ts";

const PRELOAD = new URL("./_preload.ts", import.meta.url).pathname;
const HANG = new URL("./fixtures/deadline_hang.ts", import.meta.url).pathname;

Deno.test("test deadline - a hung test fails, named, and the module's next test still runs", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", "--preload", PRELOAD, HANG],
    env: { SHURU_TEST_DEADLINE: "3", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let out;
  try {
    // Far above the 3 s deadline: only a stalled run gets here.
    out = await withDeadline(output, 120_000, "deno test on a module whose test hangs");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await output.catch(() => {});
  }
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 1, text);
  assert(
    text.includes(
      `Test "hangs on a read nobody answers" (${HANG}:6) did not finish within its 3 s deadline`,
    ),
    text,
  );
  assert(/a later test still runs \.\.\. ok/.test(text), text);
  assert(/1 passed \| 1 failed/.test(text), text);
});

Deno.test("withDeadline - settles as the promise does; otherwise a DeadlineError naming the wait", async () => {
  assertEquals(await withDeadline(Promise.resolve(7), 1000, "seven"), 7);
  let caught: unknown;
  try {
    await withDeadline(new Promise(() => {}), 10, "nothing");
  } catch (err) {
    caught = err;
  }
  assert(caught instanceof DeadlineError, String(caught));
  assertEquals(caught.message, "Timed out after 0.01 s waiting for nothing");
});
