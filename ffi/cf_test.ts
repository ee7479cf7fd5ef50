import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { isMainThread, mainRunLoop, PUMP_INTERVAL, pumpPolicy } from "./cf.ts";
import { LibraryError } from "./platform.ts";

/** Runs `script` with `deno eval` and returns its stdout (fails on a non-zero exit). */
async function evalScript(script: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

const CF = JSON.stringify(import.meta.resolve("./cf.ts"));

Deno.test("isMainThread - a main module is on the main thread; a Worker and deno test are not", async () => {
  // Measured with Deno 2.9: `deno run`/`deno eval` run the main module on the process's main
  // thread (where the framework's main-queue callbacks arrive); `deno test` runs test modules
  // on another thread, so VZ itself can only be driven from `deno run` (tests/macos/smoke.sh).
  assertEquals(isMainThread(), false);
  const worker = `import { isMainThread } from ${CF}; self.postMessage(isMainThread());`;
  const script = `import { isMainThread } from ${CF};
    const w = new Worker("data:application/javascript," + encodeURIComponent(${
    JSON.stringify(worker)
  }), { type: "module" });
    const inWorker = await new Promise((resolve) => w.onmessage = (e) => resolve(e.data));
    w.terminate();
    console.log("main=" + isMainThread() + " worker=" + inWorker);`;
  assertEquals(await evalScript(script), "main=true worker=false");
});

Deno.test("pumpPolicy - fast and ref'd while waiting, slow and unref'd while running", () => {
  assertEquals(pumpPolicy("stopped", 1), { intervalMs: PUMP_INTERVAL.busy, ref: true });
  assertEquals(pumpPolicy("transition", 0), { intervalMs: PUMP_INTERVAL.busy, ref: true });
  assertEquals(pumpPolicy("running", 0), { intervalMs: PUMP_INTERVAL.running, ref: false });
  assertEquals(pumpPolicy("paused", 0), { intervalMs: PUMP_INTERVAL.running, ref: false });
  assertEquals(pumpPolicy("running", 2), { intervalMs: PUMP_INTERVAL.busy, ref: true });
  assertEquals(pumpPolicy("stopped", 0), { intervalMs: 0, ref: false });
});

Deno.test("RunLoopPump - a ref'd pump keeps the process alive, an unref'd one does not", async () => {
  const script = `import { RunLoopPump, pumpPolicy } from ${CF};
    let ticks = 0;
    const pump = new RunLoopPump(() => {
      ticks++;
      if (ticks === 10) pump.set(pumpPolicy("running", 0));
    });
    pump.set(pumpPolicy("stopped", 1));
    globalThis.addEventListener("unload", () => console.log("ticks " + ticks));`;
  const text = await evalScript(script);
  // It pumped until the switch to the unref'd mode, then the process exited by itself.
  assertEquals(text, "ticks 10");
});

Deno.test("mainRunLoop - refused off macOS with the reason", () => {
  const err = assertThrows(() => mainRunLoop());
  assert(err instanceof LibraryError && err.code === "unsupported_os", err.message);
});
