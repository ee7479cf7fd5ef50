/**
 * Restores that must fail, and fail clearly, before any guest runs: a state from another machine
 * (another CPU count), a damaged or cut state file, a RAM file of the wrong size. The source is
 * a real guest kernel started and paused early (no disk: these tests need a machine state, not a
 * booted guest).
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ensureAssets } from "../assets/mod.ts";
import { homeLayout } from "../host/mod.ts";
import {
  createInstance,
  type Instance,
  kernelCmdline,
  machineMismatch,
  QemuBackend,
  type QemuVm,
  type VmConfig,
  VmError,
} from "../vm/mod.ts";

async function config(dir: string, instance: Instance, cpus: number): Promise<VmConfig> {
  const assets = await ensureAssets({ assetsDir: homeLayout().assets });
  return {
    kernel: assets.kernel,
    initrd: assets.initramfs,
    cmdline: kernelCmdline({ moduleGroups: [] }),
    cpus,
    memoryMiB: 256,
    accel: "tcg",
    agentSocket: instance.agentSocket,
    controlSocket: instance.controlSocket,
    consoleLog: join(dir, `console-${instance.id}.log`),
  };
}

Deno.test({
  name:
    "snapshots - another machine's state, a damaged or cut state, a wrong-size RAM file: restore_failed",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "shuru-snapfault-" });
    const backend = new QemuBackend();
    const ram = join(dir, "ram");
    const state = join(dir, "state");
    try {
      const src = await config(dir, await createInstance(join(dir, "i")), 1);
      const vm = await backend.start({ ...src, memory: { path: ram, shared: true } }) as QemuVm;
      let machine;
      try {
        // No host on the agent channel when saving (QEMU sees the hang-up at once).
        (await vm.agent).close();
        const deadline = Date.now() + 30_000;
        for (;;) {
          const devs = await vm.qmp!.execute<{ label: string; filename: string }[]>(
            "query-chardev",
          );
          if (devs.find((d) => d.label === "agent")?.filename.startsWith("disconnected:")) break;
          assert(Date.now() < deadline, "QEMU never saw the agent channel close");
          await new Promise((r) => setTimeout(r, 20));
        }
        await vm.pause();
        await vm.saveState(state);
        machine = vm.describe();
      } finally {
        vm.kill();
        await vm.exited;
      }

      // The same machine restores (paused) and describes itself the same.
      const same = await config(dir, await createInstance(join(dir, "i")), 1);
      const ok = await backend.restore(same, { ramFile: ram, stateFile: state });
      try {
        assertEquals(machineMismatch({ ...machine }, ok.describe()), undefined);
        const status = await (ok as QemuVm).qmp!.execute<{ status: string }>("query-status");
        assertEquals(status.status, "paused");
      } finally {
        ok.kill();
        await ok.exited;
      }

      // QEMU would load this one-CPU state into two CPUs; the recorded machine stops it.
      const other = await config(dir, await createInstance(join(dir, "i")), 2);
      const err = await assertRejects(() =>
        backend.restore(other, { ramFile: ram, stateFile: state, machine: { ...machine } })
      );
      assert(err instanceof VmError && err.code === "restore_failed", String(err));
      assertEquals(
        err.message,
        "Cannot restore the VM: the snapshot belongs to another machine (its CPU count was 1, " +
          "this machine has 2)",
      );

      const bytes = await Deno.readFile(state);
      const cases: [string, Uint8Array][] = [
        ["cut", bytes.subarray(0, Math.floor(bytes.length / 2))],
        ["damaged", bytes.map((b, i) => (i > 64 && i % 7 === 0 ? b ^ 0x5a : b))],
        ["empty", new Uint8Array(0)],
      ];
      for (const [what, damaged] of cases) {
        const path = join(dir, `state-${what}`);
        await Deno.writeFile(path, damaged);
        const c = await config(dir, await createInstance(join(dir, "i")), 1);
        const e = await assertRejects(() => backend.restore(c, { ramFile: ram, stateFile: path }));
        assert(e instanceof VmError && e.code === "restore_failed", `${what}: ${e}`);
      }

      const small = join(dir, "small-ram");
      await Deno.writeFile(small, new Uint8Array(4096));
      const c = await config(dir, await createInstance(join(dir, "i")), 1);
      const e = await assertRejects(() => backend.restore(c, { ramFile: small, stateFile: state }));
      assert(e instanceof VmError && e.message.includes("the RAM file is 4096 bytes"), String(e));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
