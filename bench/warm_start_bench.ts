/**
 * Warm starts and memory checkpoints through the runner and the CLI, every figure against a
 * reference measured in the same run:
 *
 * 1. `shuru run -- true` (a warm start: the ready snapshot resumed) against `shuru run --cold --
 *    true`, alternated, with each path's phases from `-v` (issue target: warm / cold ≤ 0.15
 *    under TCG). The KVM target (first exec within 150 ms) is not measurable on these hosts.
 * 2. The first and second `exec true` on a warm-started guest against a cold-booted one (TCG
 *    translates the guest's code afresh in every new QEMU process).
 * 3. A memory checkpoint of a running 2 GiB sandbox with about 300 MiB in use (a Python process
 *    holding random bytes): the pause and the total, then a second one `GAP` seconds later (60
 *    unless `SHURU_BENCH_GAP_S` says otherwise), and the bytes it added to the store.
 * 4. The memory of 4 forks of a memory checkpoint against 4 cold boots (and 4 warm starts): the
 *    sum of the QEMU processes' RSS and PSS once each ran `true`.
 *
 * Usage: deno run -A bench/warm_start_bench.ts [rounds]   (TCG here; default 3 rounds;
 * `SHURU_BENCH_PARTS=1,2` runs only those parts)
 *
 * @module
 */

import { homeLayout } from "../host/mod.ts";
import { type BootedSandbox, bootSandbox } from "../runner/mod.ts";
import { resolveSpec, type SpecLayer } from "../spec/mod.ts";
import { median } from "./_stats.ts";
import { runShuru, verboseFigures } from "./_shuru.ts";

const ROUNDS = Number(Deno.args[0] ?? 3);
const GAP_S = Number(Deno.env.get("SHURU_BENCH_GAP_S") ?? 60);
const FORKS = 4;
const PARTS = new Set((Deno.env.get("SHURU_BENCH_PARTS") ?? "1,2,3,4").split(","));
const accel = (Deno.env.get("SHURU_ACCEL") ?? "tcg") as "tcg" | "kvm" | "auto";

const r0 = (x: number) => Math.round(x);
function p(xs: number[]): string {
  return `median ${r0(median(xs))} (min ${r0(Math.min(...xs))}, max ${r0(Math.max(...xs))})`;
}
const mib = (bytes: number) => (bytes / 1048576).toFixed(1);

const shared = homeLayout();
const root = await Deno.makeTempDir({ prefix: "shuru-warm-bench-" });
const home = { ...homeLayout(root), assets: shared.assets };
const notice = (l: string) => console.error(`  (${l})`);

interface CliRun {
  wall: number;
  phases: Record<string, number>;
  exec: number;
}

/** `shuru run -v [--cold] -- true` in the bench's home; wall time and the `-v` figures. */
async function cliRun(cold: boolean): Promise<CliRun> {
  const { wall, stderr } = await runShuru(
    ["run", "-v", ...(cold ? ["--cold"] : []), "--", "true"],
    {
      env: { SHURU_HOME: root, SHURU_ASSETS: shared.assets, SHURU_ACCEL: accel },
    },
  );
  const { boot: phases, exec } = verboseFigures(stderr);
  return { wall, phases, exec: exec ?? NaN };
}

function phaseLine(runs: CliRun[]): string {
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.phases)))];
  return names.map((n) => `${n} ${r0(median(runs.map((r) => r.phases[n] ?? 0)))}`).join(", ");
}

async function boot(layer: SpecLayer): Promise<BootedSandbox> {
  return await bootSandbox(resolveSpec([{ accel, ...layer }]), { home, onNotice: notice });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** RSS and PSS of a process, in KiB (PSS splits pages shared with other processes). */
async function memoryOf(pid: number): Promise<{ rss: number; pss: number }> {
  const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  return { rss: get("Rss"), pss: get("Pss") };
}

/** Boots `n` sandboxes of `layer` at once, runs `true` in each, and sums their QEMU memory. */
async function groupMemory(n: number, layer: SpecLayer): Promise<{ rss: number; pss: number }> {
  const boxes = await Promise.all(Array.from({ length: n }, () => boot(layer)));
  try {
    await Promise.all(boxes.map((b) => b.agent.exec(["true"])));
    // Let each settle (the agent's first requests, the kernel's timers).
    await new Promise((r) => setTimeout(r, 3000));
    const each = await Promise.all(boxes.map((b) => memoryOf(b.vm.pid)));
    return {
      rss: each.reduce((a, m) => a + m.rss, 0),
      pss: each.reduce((a, m) => a + m.pss, 0),
    };
  } finally {
    await Promise.all(boxes.map((b) => b[Symbol.asyncDispose]()));
  }
}

try {
  console.log(`warm starts under ${accel}, ${ROUNDS} rounds, 2 vCPUs, 2 GiB`);

  // 1. run -- true, warm against cold.
  if (PARTS.has("1")) await part1();
  if (PARTS.has("2")) await part2();
  if (PARTS.has("3")) await part3();
  if (PARTS.has("4")) await part4();
} finally {
  await Deno.remove(root, { recursive: true }).catch(() => {});
}

async function part1(): Promise<void> {
  await cliRun(false); // makes the ready snapshot if needed; caches
  await cliRun(true);
  const warm: CliRun[] = [];
  const cold: CliRun[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    warm.push(await cliRun(false));
    cold.push(await cliRun(true));
  }
  console.log("1. shuru run -- true, wall (alternated):");
  console.log(`   cold (--cold, reference): ${p(cold.map((r) => r.wall))} ms`);
  console.log(`   warm (ready snapshot):    ${p(warm.map((r) => r.wall))} ms`);
  console.log(
    `   warm / cold: ${
      (median(warm.map((r) => r.wall)) / median(cold.map((r) => r.wall))).toFixed(3)
    }` +
      ` (median of pairs ${median(warm.map((r, i) => r.wall / cold[i]!.wall)).toFixed(3)}; ` +
      "target ≤ 0.15)",
  );
  console.log(`   warm phases, ms each: ${phaseLine(warm)}; command ${p(warm.map((r) => r.exec))}`);
  console.log(`   cold phases, ms each: ${phaseLine(cold)}; command ${p(cold.map((r) => r.exec))}`);
  console.log(
    "   (KVM target: first exec within 150 ms of the start; KVM does not work on these hosts)",
  );
}

/** 2. First exec after a warm start against a cold boot. */
async function part2(): Promise<void> {
  const first = { warm: [] as number[], cold: [] as number[] };
  const second = { warm: [] as number[], cold: [] as number[] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const kind of ["warm", "cold"] as const) {
      await using b = await boot(kind === "cold" ? { cold: true } : {});
      first[kind].push(await timed(() => b.agent.exec(["true"])));
      second[kind].push(await timed(() => b.agent.exec(["true"])));
    }
  }
  console.log("2. exec true right after the start (alternated):");
  console.log(`   cold boot (reference): first ${p(first.cold)} ms, second ${p(second.cold)} ms`);
  console.log(`   warm start:            first ${p(first.warm)} ms, second ${p(second.warm)} ms`);
  console.log(
    `   first exec warm / cold: ${(median(first.warm) / median(first.cold)).toFixed(2)}; ` +
      `second: ${(median(second.warm) / median(second.cold)).toFixed(2)}`,
  );
}

/** 3. Memory checkpoints of a running sandbox holding ~300 MiB. */
async function part3(): Promise<void> {
  {
    await using b = await boot({});
    const holder = b.agent.spawn([
      "python3",
      "-c",
      "import os, sys, time\ndata = os.urandom(300 * 1024 * 1024)\nprint('held', flush=True)\n" +
      "time.sleep(100000)",
    ], { keep: true });
    const reader = holder.stdout.getReader();
    let seen = "";
    while (!seen.includes("held")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the memory holder ended");
      seen += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    void holder.stdout.cancel().catch(() => {});
    const used = new TextDecoder().decode(
      (await b.agent.exec(["sh", "-c", "free -m | awk '/Mem:/ {print $3}'"])).stdout,
    ).trim();
    const one = await b.checkpoint("bench-mem-1", { memory: true });
    await new Promise((r) => setTimeout(r, GAP_S * 1000));
    const two = await b.checkpoint("bench-mem-2", { memory: true });
    const added = (r: typeof one) => r.saved.newBytes + (r.saved.memory?.newChunks ?? 0) * 65536;
    console.log(
      `3. memory checkpoint of a running 2 GiB sandbox (guest says ${used} MiB used; the ` +
        "reference is the first save):",
    );
    console.log(
      `   first:  paused ${r0(one.pauseMs)} ms, total ${r0(one.totalMs)} ms, ` +
        `${mib(added(one))} MiB added (${one.saved.memory?.usedBlocks} memory blocks used)`,
    );
    console.log(
      `   ${GAP_S} s later: paused ${r0(two.pauseMs)} ms, total ${r0(two.totalMs)} ms, ` +
        `${mib(added(two))} MiB added; second / first bytes added ${
          (added(two) / added(one)).toFixed(3)
        }`,
    );
    await b.agent.exec(["true"]);
  }
}

/** 4. Memory of forks against cold boots. */
async function part4(): Promise<void> {
  {
    await using b = await boot({});
    await b.agent.exec(["true"]);
    await b.checkpoint("bench-idle", { memory: true });
  }
  const coldMem = await groupMemory(FORKS, { cold: true });
  const warmMem = await groupMemory(FORKS, {});
  const forkMem = await groupMemory(FORKS, { from: "bench-idle" });
  console.log(`4. ${FORKS} sandboxes at once, sum over their QEMU processes after \`true\`:`);
  console.log(
    `   cold boots (reference): RSS ${mib(coldMem.rss * 1024)} MiB, PSS ${
      mib(coldMem.pss * 1024)
    } MiB`,
  );
  console.log(
    `   warm starts:            RSS ${mib(warmMem.rss * 1024)} MiB, PSS ${
      mib(warmMem.pss * 1024)
    } MiB (PSS / cold ${(warmMem.pss / coldMem.pss).toFixed(2)})`,
  );
  console.log(
    `   forks of a memory checkpoint: RSS ${mib(forkMem.rss * 1024)} MiB, PSS ${
      mib(forkMem.pss * 1024)
    } MiB (RSS / cold ${(forkMem.rss / coldMem.rss).toFixed(2)}, PSS / cold ${
      (forkMem.pss / coldMem.pss).toFixed(2)
    })`,
  );
}
