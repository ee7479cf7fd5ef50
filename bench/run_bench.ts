/**
 * `shuru run --cold -- true` (a cold boot; warm starts are `warm_start_bench.ts`), end to end,
 * split by phase: QEMU start → kernel → initramfs → root mounted → agent started → agent ready →
 * exec → shutdown; plus the peak RSS of the shuru process. The reference, measured in the same run and alternated with it, is a bare QEMU boot
 * of the same kernel and initramfs straight to userspace and power-off (the floor any run pays).
 *
 * Usage: deno run -A bench/run_bench.ts [runs]   (SHURU_ACCEL defaults to tcg here)
 *
 * @module
 */

import { join } from "node:path";
import { ensureAssets } from "../assets/mod.ts";
import { homeLayout } from "../host/mod.ts";
import { hostTscRate, kernelCmdline, QemuBackend } from "../vm/mod.ts";
import { median } from "./_stats.ts";
import { runShuru, verboseFigures } from "./_shuru.ts";

const RUNS = Number(Deno.args[0] ?? 5);
const accel = Deno.env.get("SHURU_ACCEL") ?? "tcg";

function p(xs: number[]): string {
  return `median ${Math.round(median(xs))} (min ${Math.round(Math.min(...xs))}, max ${
    Math.round(Math.max(...xs))
  })`;
}

const assets = await ensureAssets({ assetsDir: homeLayout().assets });
const tsc = await hostTscRate();

async function bareBoot(): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-bench-" });
  try {
    const agentSocket = join(dir, "agent.sock");
    const started = performance.now();
    const vm = await new QemuBackend().start({
      kernel: assets.kernel,
      initrd: assets.initramfs,
      cmdline: kernelCmdline({ probe: true, ...(tsc ? { tscKhz: tsc.khz } : {}) }),
      cpus: 2,
      memoryMiB: 2048,
      accel: "tcg",
      agentSocket,
      consoleLog: join(dir, "console.log"),
    });
    await vm.exited;
    return performance.now() - started;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface RunSample {
  wall: number;
  rssKiB: number;
  qemuRssKiB: number;
  fields: Record<string, number>;
}

async function shuruRun(home: string): Promise<RunSample> {
  const { wall, stderr: text } = await runShuru(["run", "-v", "--cold", "--", "true"], {
    env: { SHURU_HOME: home, SHURU_ASSETS: homeLayout().assets, SHURU_ACCEL: accel },
    wrap: ["/usr/bin/time", "-f", "RSS-KIB %M"],
  });
  // `agentReady` (a boot phase) is the time from QEMU's start to the agent's answer.
  const f = verboseFigures(text);
  const fields: Record<string, number> = {
    ...f.boot,
    ...f.guest,
    ...(f.exec !== undefined ? { exec: f.exec } : {}),
    ...(f.shutdown !== undefined ? { shutdown: f.shutdown } : {}),
  };
  // /usr/bin/time's figure is the largest process of the tree (QEMU); shuru reports its own.
  const rss = Number(text.match(/peak RSS (\d+) MiB/)?.[1] ?? NaN) * 1024;
  const qemuRss = Number(text.match(/RSS-KIB (\d+)/)?.[1] ?? NaN);
  return { wall, rssKiB: rss, qemuRssKiB: qemuRss, fields };
}

const home = await Deno.makeTempDir({ prefix: "shuru-bench-home-" });
try {
  const bare: number[] = [];
  const runs: RunSample[] = [];
  await shuruRun(home); // warm-up: caches, KVM probe decision
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareBoot());
    runs.push(await shuruRun(home));
  }
  const col = (name: string) => runs.map((r) => r.fields[name]).filter((x) => x !== undefined);
  console.log(
    `shuru run --cold -- true under ${accel}, ${RUNS} runs alternated with a bare boot`,
  );
  console.log(`  bare QEMU boot to userspace + poweroff (reference): ${p(bare)} ms`);
  console.log(
    `  shuru run --cold -- true, wall:                      ${p(runs.map((r) => r.wall))} ms`,
  );
  console.log(
    `  ratio run / bare boot (median of pairs):             ${
      median(runs.map((r, i) => r.wall / bare[i]!)).toFixed(2)
    }x`,
  );
  console.log(`  phases, ms after QEMU start: kernel ${p(col("kernel"))}`);
  console.log(`                               initramfs ${p(col("initramfs"))}`);
  console.log(`                               root mounted ${p(col("rootMounted"))}`);
  console.log(`                               agent started ${p(col("agentStart"))}`);
  console.log(`  agent ready, ms after QEMU start: ${p(col("agentReady"))}`);
  console.log(`  exec true: ${p(col("exec"))} ms; shutdown: ${p(col("shutdown"))} ms`);
  console.log(`  peak RSS of the shuru process: ${p(runs.map((r) => r.rssKiB / 1024))} MiB`);
  console.log(
    `  peak RSS of the largest process (QEMU): ${p(runs.map((r) => r.qemuRssKiB / 1024))} MiB`,
  );
} finally {
  await Deno.remove(home, { recursive: true });
}
