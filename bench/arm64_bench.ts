/**
 * `shuru run --arch arm64 -- true` on this host (an emulated arm64 guest: QEMU `virt` under TCG)
 * against the host's own x86_64 guest (`microvm`, TCG here too), alternated in the same run, with
 * each one's phases: QEMU start → kernel → initramfs → root mounted → agent started → agent ready
 * → exec → shutdown.
 *
 * Usage: deno run -A bench/arm64_bench.ts [runs]   (default 3; needs `shuru init --arch arm64`)
 *
 * @module
 */

import { join } from "node:path";
import { ensureAssets } from "../assets/mod.ts";
import { type GuestArch, homeLayout } from "../host/mod.ts";
import { median } from "./_stats.ts";

const RUNS = Number(Deno.args[0] ?? 3);
const ROOT = new URL("..", import.meta.url).pathname;

function p(xs: number[]): string {
  return `median ${Math.round(median(xs))} (min ${Math.round(Math.min(...xs))}, max ${
    Math.round(Math.max(...xs))
  })`;
}

interface Sample {
  wall: number;
  fields: Record<string, number>;
}

async function run(home: string, arch: GuestArch): Promise<Sample> {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--config",
      join(ROOT, "deno.json"),
      join(ROOT, "main.ts"),
      "run",
      "-v",
      "--arch",
      arch,
      "--",
      "true",
    ],
    env: { SHURU_HOME: home, SHURU_ASSETS: homeLayout().assets, SHURU_ACCEL: "tcg" },
    stdout: "null",
    stderr: "piped",
  }).output();
  const wall = performance.now() - started;
  const text = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`shuru run --arch ${arch} failed:\n${text}`);
  const fields: Record<string, number> = {};
  const grab = (re: RegExp, name: string) => {
    const m = text.match(re);
    if (m) fields[name] = Number(m[1]);
  };
  grab(/agent ready (\d+) ms/, "agentReadyFromStart");
  grab(/vm (\d+) ms/, "vmStartedFromStart");
  grab(/command ran (\d+) ms/, "exec");
  grab(/shutdown (\d+) ms/, "shutdown");
  for (const phase of ["kernel", "initramfs", "rootMounted", "agentStart"]) {
    grab(new RegExp(`${phase} (\\d+)`), phase);
  }
  return { wall, fields };
}

for (const arch of ["x86_64", "arm64"] as const) {
  const a = await ensureAssets({ assetsDir: homeLayout().assets, arch, checkOnly: true });
  if (!a.present) {
    console.log(`arm64 bench: skipped (no ${arch} guest image; run ./shuru init --arch ${arch})`);
    Deno.exit(0);
  }
}

const home = await Deno.makeTempDir({ prefix: "shuru-bench-home-" });
try {
  const x86: Sample[] = [];
  const arm: Sample[] = [];
  await run(home, "arm64"); // warm-up: page cache of both images
  await run(home, "x86_64");
  for (let i = 0; i < RUNS; i++) {
    arm.push(await run(home, "arm64"));
    x86.push(await run(home, "x86_64"));
  }
  console.log(`shuru run -- true under TCG, ${RUNS} runs of each, alternated`);
  console.log(`  x86_64 guest (microvm), wall: ${p(x86.map((r) => r.wall))} ms`);
  console.log(`  arm64 guest (virt, emulated), wall: ${p(arm.map((r) => r.wall))} ms`);
  console.log(
    `  ratio arm64 / x86_64 (median of pairs): ${
      median(arm.map((r, i) => r.wall / x86[i]!.wall)).toFixed(2)
    }x`,
  );
  for (const [name, runs] of [["x86_64", x86], ["arm64", arm]] as const) {
    const col = (f: string) => runs.map((r) => r.fields[f]).filter((x) => x !== undefined);
    const ready = runs.map((r) => r.fields.agentReadyFromStart! - r.fields.vmStartedFromStart!);
    console.log(`  ${name} phases, ms after QEMU start:`);
    console.log(`    kernel ${p(col("kernel"))}`);
    console.log(`    initramfs ${p(col("initramfs"))}`);
    console.log(`    root mounted ${p(col("rootMounted"))}`);
    console.log(`    agent started ${p(col("agentStart"))}`);
    console.log(`    agent ready ${p(ready)}`);
    console.log(`    exec true ${p(col("exec"))} ms; shutdown ${p(col("shutdown"))} ms`);
  }
} finally {
  await Deno.remove(home, { recursive: true });
}
