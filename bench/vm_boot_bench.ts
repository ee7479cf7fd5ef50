/**
 * Boot phases of a real guest under the host's accelerator choice (TCG on hosts where KVM
 * does not work), medians over runs:
 * QEMU start → kernel → initramfs → root mounted → agent start → agent ready → exited.
 *
 * Reference measured in the same run: the probe boot (kernel + initramfs to userspace, no
 * disk), so the printed ratio says what the root filesystem and agent add on this host.
 *
 * Run: deno run -A bench/vm_boot_bench.ts [runs]   (default 5)
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureAssets } from "../assets/mod.ts";
import { PROBE_MARKER } from "../proto/mod.ts";
import { homeLayout } from "../host/mod.ts";
import { hostTscRate, kernelCmdline, parseAccel, QemuBackend, resolveAccel } from "../vm/mod.ts";

const TEST_AGENT = fileURLToPath(new URL("../tests/fixtures/test_agent.ts", import.meta.url));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : Math.round((s[mid - 1]! + s[mid]!) / 2);
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "inherit" }).output();
  if (!out.success) throw new Error(`${cmd} failed`);
}

/** Runs the benchmark; returns the median phase times in ms. */
export async function benchVmBoot(runs = 5): Promise<Record<string, number>> {
  const layout = homeLayout();
  const assets = await ensureAssets({ assetsDir: layout.assets, agentEntry: TEST_AGENT });
  const tscKhz = (await hostTscRate())?.khz;
  const { accel, notice } = await resolveAccel(parseAccel(Deno.env.get("SHURU_ACCEL") ?? "auto"), {
    kernel: assets.kernel,
    initrd: assets.initramfs,
    cacheFile: join(layout.assets, "kvm-probe.json"),
    workDir: layout.assets,
    tscKhz,
  });
  if (notice) console.error(notice);
  const dir = await Deno.makeTempDir({ prefix: "shuru-bench-" });
  const samples: Record<string, number[]> = {};
  const add = (k: string, v: number | undefined) => v !== undefined && (samples[k] ??= []).push(v);
  try {
    for (let i = 0; i < runs; i++) {
      // Reference: probe boot (kernel + initramfs until userspace).
      let probeAt = 0;
      const t0 = performance.now();
      const probe = await new QemuBackend({
        onConsoleLine: (l) => {
          if (l.includes(PROBE_MARKER) && !probeAt) probeAt = performance.now() - t0;
        },
      }).start({
        kernel: assets.kernel,
        initrd: assets.initramfs,
        cmdline: kernelCmdline({ tscKhz, probe: true }),
        cpus: 1,
        memoryMiB: 512,
        accel,
        agentSocket: join(dir, "p.sock"),
        consoleLog: join(dir, "p.log"),
      });
      await probe.exited;
      (await probe.agent).close();
      add("probe.userspace", Math.round(probeAt));

      // Full boot: qcow2 overlay over the rootfs, 4 GiB, agent reports and powers off.
      const overlay = join(dir, "o.qcow2");
      await Deno.remove(overlay).catch(() => {});
      await run("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        assets.rootfs,
        overlay,
        "4G",
      ]);
      const t1 = performance.now();
      const vm = await new QemuBackend().start({
        kernel: assets.kernel,
        initrd: assets.initramfs,
        cmdline: kernelCmdline({ tscKhz, moduleGroups: [] }),
        cpus: 1,
        memoryMiB: 512,
        accel,
        disk: { kind: "file", path: overlay, format: "qcow2" },
        agentSocket: join(dir, "a.sock"),
        consoleLog: join(dir, "a.log"),
      });
      const conn = await vm.agent;
      const buf = new Uint8Array(4096);
      await conn.read(buf);
      const ready = Math.round(performance.now() - t1);
      // Keep draining: with our side closed, the guest's writes to the port would block.
      const drained = (async () => {
        while ((await conn.read(buf).catch(() => null)) !== null) { /* discard */ }
      })();
      const exit = await vm.exited;
      await drained;
      conn.close();
      if (exit.code !== 0) throw new Error(`boot ${i} failed: ${exit.consoleTail}`);
      for (const [k, v] of Object.entries(vm.phases)) add(k, v);
      add("agentReady", ready);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const med: Record<string, number> = {};
  for (const [k, v] of Object.entries(samples)) med[k] = median(v);
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(`vm boot (${accel}, ${runs} runs, load ${load}), medians in ms from QEMU start:`);
  const phases = ["spawned", "qemuReady", "kernel", "initramfs", "rootMounted", "agentStart"];
  let previous = 0;
  for (const k of [...phases, "agentReady", "exited"]) {
    const at = med[k];
    const delta = at === undefined ? "" : `  (+${at - previous})`;
    console.log(`  ${k.padEnd(12)} ${String(at ?? "-").padStart(6)}${delta}`);
    if (at !== undefined) previous = at;
  }
  console.log(`  reference: probe boot to userspace ${med["probe.userspace"]} ms`);
  console.log(
    `  ratio agentReady / probe boot: ${(med.agentReady! / med["probe.userspace"]!).toFixed(2)}`,
  );
  return med;
}

if (import.meta.main) {
  await benchVmBoot(Number(Deno.args[0] ?? 5));
}
