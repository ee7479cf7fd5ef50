/**
 * Live checkpoint of a running sandbox (4 GiB disk) after 64 MiB were dirtied: the guest's pause
 * (filesystem frozen: freeze → copy-on-write snapshot → thaw) and the total save time, several
 * rounds on one booted guest.
 *
 * The reference, measured in the same run on the same guest, is the way the reference project (the Rust shuru for macOS)
 * saves: power the guest off, then save the disk (`stop({saveAs})`). The guest is unusable for
 * that whole time (and needs a new boot afterwards, not counted here); the ratio printed is
 * live pause / stop-and-save downtime.
 *
 * Usage: deno run -A bench/live_checkpoint_bench.ts [rounds]   (SHURU_ACCEL defaults to tcg)
 *
 * @module
 */

import { homeLayout } from "../host/mod.ts";
import { bootSandbox } from "../runner/mod.ts";
import { resolveSpec } from "../spec/mod.ts";
import { median } from "./_stats.ts";

const ROUNDS = Number(Deno.args[0] ?? 3);
const DIRTY_MIB = 64;
const accel = (Deno.env.get("SHURU_ACCEL") ?? "tcg") as "tcg" | "kvm" | "auto";

const fmt = (xs: number[]) =>
  `median ${median(xs).toFixed(1)} ms (min ${Math.min(...xs).toFixed(1)}, max ${
    Math.max(...xs).toFixed(1)
  })`;

const shared = homeLayout();
const root = await Deno.makeTempDir({ prefix: "shuru-live-ckpt-bench-" });
const home = { ...homeLayout(root), assets: shared.assets };
try {
  const booted = await bootSandbox(resolveSpec([{ cpus: 2, memoryMiB: 1024, accel }]), {
    home,
    onNotice: (l) => console.error(l),
  });
  try {
    const dirty = async (round: number) => {
      const r = await booted.agent.exec([
        "sh",
        "-c",
        `dd if=/dev/urandom of=/root/dirty${round} bs=1M count=${DIRTY_MIB} 2>/dev/null && sync`,
      ]);
      if (r.exitCode !== 0) throw new Error(`dd failed: ${new TextDecoder().decode(r.stderr)}`);
    };
    // The first save hashes every used block of the base image; the rounds after it measure
    // what a save costs on a sandbox that was saved before.
    const first = await booted.checkpoint("base");
    console.log(
      `first save (base image ingested): pause ${first.pauseMs.toFixed(1)} ms, total ${
        Math.round(first.totalMs)
      } ms, ${(first.saved.newBytes / 1048576).toFixed(0)} MiB new`,
    );
    const pauses: number[] = [];
    const totals: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await dirty(i);
      const r = await booted.checkpoint(`live${i}`);
      pauses.push(r.pauseMs);
      totals.push(r.totalMs);
      console.log(
        `round ${i}: pause ${r.pauseMs.toFixed(1)} ms, total ${Math.round(r.totalMs)} ms, ` +
          `${r.saved.hashedBlocks} blocks hashed, ${
            (r.saved.newBytes / 1048576).toFixed(1)
          } MiB new`,
      );
    }
    await dirty(ROUNDS);
    const t0 = performance.now();
    const stopped = await booted.stop({ saveAs: "stopped" });
    const downtime = performance.now() - t0;
    console.log(
      `reference (power off, then save): guest down ${Math.round(downtime)} ms, ` +
        `save ${Math.round(stopped.saved?.elapsedMs ?? NaN)} ms`,
    );
    console.log(`live checkpoint pause: ${fmt(pauses)}`);
    console.log(`live checkpoint total: ${fmt(totals)}`);
    console.log(
      `ratio: guest pause / reference downtime = ${(median(pauses) / downtime).toFixed(4)} ` +
        `(${(downtime / median(pauses)).toFixed(0)}x shorter)`,
    );
  } finally {
    await booted[Symbol.asyncDispose]();
  }
} finally {
  await Deno.remove(root, { recursive: true }).catch(() => {});
}
