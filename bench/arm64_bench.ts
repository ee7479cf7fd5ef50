/**
 * `shuru run --arch arm64 -- true` on this host (an emulated arm64 guest: QEMU `virt` under TCG)
 * against the host's own x86_64 guest (`microvm`, TCG here too), alternated in the same run, with
 * each one's phases as `-v` prints them (a warm start's by default; `SHURU_BENCH_COLD=1` times
 * cold boots, with the guest's own phases: kernel, initramfs, root mounted, agent started).
 *
 * Usage: deno run -A bench/arm64_bench.ts [runs]   (default 3; needs `shuru init --arch arm64`)
 *
 * @module
 */

import { ensureAssets } from "../assets/mod.ts";
import { type GuestArch, homeLayout } from "../host/mod.ts";
import { median } from "./_stats.ts";
import { runShuru, verboseFigures } from "./_shuru.ts";

const RUNS = Number(Deno.args[0] ?? 3);

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
  const cold = Deno.env.get("SHURU_BENCH_COLD") === "1" ? ["--cold"] : [];
  const { wall, stderr } = await runShuru(["run", "-v", ...cold, "--arch", arch, "--", "true"], {
    env: { SHURU_HOME: home, SHURU_ASSETS: homeLayout().assets, SHURU_ACCEL: "tcg" },
  });
  const f = verboseFigures(stderr);
  return {
    wall,
    fields: {
      ...f.boot,
      ...f.guest,
      ...(f.exec !== undefined ? { exec: f.exec } : {}),
      ...(f.shutdown !== undefined ? { shutdown: f.shutdown } : {}),
    },
  };
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
    const names = [...new Set(runs.flatMap((r) => Object.keys(r.fields)))];
    console.log(`  ${name} phases (shuru run -v), ms:`);
    for (const n of names) {
      console.log(`    ${n} ${p(runs.map((r) => r.fields[n]).filter((x) => x !== undefined))}`);
    }
  }
} finally {
  await Deno.remove(home, { recursive: true });
}
