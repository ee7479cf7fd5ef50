/**
 * A hung test fails with its name instead of stalling the run: `deno test --preload
 * tests/_preload.ts` (as `run-tests` and the `test` task run it) on a module whose first test
 * never finishes; and `run-tests`' watchdog ends a run stuck where no test deadline can fire.
 */

import { assert, assertEquals } from "./assert.ts";
import { DeadlineError, withDeadline } from "./_deadline.ts";

const PRELOAD = new URL("./_preload.ts", import.meta.url).pathname;
const HANG = new URL("./fixtures/deadline_hang.ts", import.meta.url).pathname;
const STUCK = new URL("./fixtures/stuck_module.ts", import.meta.url).pathname;
const RUN_TESTS = new URL("../run-tests", import.meta.url).pathname;

/** Runs the hanging fixture under the preload; returns its exit code and output. */
async function runHangFixture(env: Record<string, string>): Promise<[number, string]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", "--preload", PRELOAD, HANG],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  try {
    // Far above the fixture's deadlines: only a stalled run gets here.
    const out = await withDeadline(output, 120_000, "deno test on a module whose test hangs");
    return [
      out.code,
      new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
    ];
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await output.catch(() => {});
  }
}

Deno.test("test deadline - a hung test fails, named, and the module's next test still runs", async () => {
  // The test's own deadline (testDeadline), then the one SHURU_TEST_DEADLINE sets for all.
  for (const [env, seconds] of [[{}, 2], [{ SHURU_TEST_DEADLINE: "1" }, 1]] as const) {
    const [code, text] = await runHangFixture(env);
    assertEquals(code, 1, text);
    assert(
      text.includes(
        `Test "hangs on a read nobody answers" (${HANG}:8) did not finish within its ` +
          `${seconds} s deadline`,
      ),
      text,
    );
    assert(/a later test still runs \.\.\. ok/.test(text), text);
    assert(/1 passed \| 1 failed/.test(text), text);
  }
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

Deno.test("run-tests - the suite watchdog ends a run no test deadline can end, with everything it started", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-watchdog-" });
  const pidFile = `${dir}/sleeper.pid`;
  const child = new Deno.Command(RUN_TESTS, {
    args: ["--no-check", STUCK],
    env: {
      RUN_TESTS_NO_SETUP: "1",
      SHURU_SUITE_DEADLINE: "20s",
      STUCK_PID_FILE: pidFile,
      NO_COLOR: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let out;
  try {
    out = await withDeadline(output, 180_000, "run-tests on a module that blocks its event loop");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await output.catch(() => {});
  }
  try {
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 124, stderr);
    assert(stderr.includes("run-tests: the suite ran past its 20s deadline"), stderr);
    // The stuck test got as far as starting its child (it does within seconds): the watchdog
    // ended that child too.
    const pid = await Deno.readTextFile(pidFile).catch(() => "");
    if (pid !== "") {
      // A zombie (state Z) is dead, waiting for a reaper.
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
      assert(
        stat === "" || / Z /.test(stat),
        `the stuck test's child outlived the watchdog: ${stat}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
