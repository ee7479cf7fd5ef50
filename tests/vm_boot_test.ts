/**
 * Boots the real guest under QEMU (TCG here) with the real assets: root disk served by
 * qemu-nbd over a qcow2 overlay (until shuru's NBD server is wired in), a 9p mount, the agent
 * port. The assets use tests/fixtures/test_agent.ts as the agent, which reports on the port
 * and exits, powering the guest off.
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertEquals } from "./_assert.ts";
import { LineReader } from "./_lines.ts";
import { ensureAssets, type GuestAssets } from "../assets/mod.ts";
import { homeLayout } from "../host/mod.ts";
import { createInstance, hostTscRate, kernelCmdline, launchGuest, QemuBackend } from "../vm/mod.ts";

const TEST_AGENT = fileURLToPath(new URL("./fixtures/test_agent.ts", import.meta.url));
// Larger than the image (4 GiB): the guest must grow its filesystem.
const DISK_BYTES = 5 * 1024 ** 3;

let assetsPromise: Promise<GuestAssets> | undefined;
function testAssets(): Promise<GuestAssets> {
  // The default data home's assets folder: built once, reused by later runs and CI.
  assetsPromise ??= ensureAssets({ assetsDir: homeLayout().assets, agentEntry: TEST_AGENT });
  return assetsPromise;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} failed (apt-get install qemu-utils): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

/** Serves a 4 GiB qcow2 overlay of the rootfs with qemu-nbd on a Unix socket. */
async function serveOverlay(dir: string, rootfs: string) {
  const overlay = join(dir, "overlay.qcow2");
  await run("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "raw",
    "-b",
    rootfs,
    overlay,
    String(DISK_BYTES),
  ]);
  const socket = join(dir, "nbd.sock");
  const child = new Deno.Command("qemu-nbd", {
    args: [
      "--socket",
      socket,
      "--format",
      "qcow2",
      "--export-name",
      "root",
      "--persistent",
      "--discard=unmap",
      overlay,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  for (let i = 0; i < 6000; i++) {
    try {
      await Deno.stat(socket);
      return { socket, child };
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  child.kill("SIGKILL");
  throw new Error("qemu-nbd did not create its socket in 60 s (apt-get install qemu-utils)");
}

/** Reads `count` newline-terminated lines (at most `cap` bytes) from `conn`. */
async function readLines(conn: Deno.Conn, count: number, cap = 64 * 1024): Promise<string[]> {
  let text = "";
  const buf = new Uint8Array(4096);
  const decoder = new TextDecoder();
  while (text.length < cap && text.split("\n").length <= count) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
  return text.split("\n").slice(0, count);
}

Deno.test({
  name:
    "the guest boots from a 5 GiB NBD disk, grows its filesystem, mounts 9p, reaches the agent, powers off",
  sanitizeResources: false,
  fn: async () => {
    const assets = await testAssets();
    const dir = await Deno.makeTempDir({ prefix: "shuru-boot-" });
    const nbd = await serveOverlay(dir, assets.rootfs);
    try {
      const shared = join(dir, "shared");
      await Deno.mkdir(shared);
      await Deno.writeTextFile(join(shared, "hello.txt"), "hello from the host\n");
      const instance = await createInstance(join(dir, "instances"));
      const vm = await launchGuest({
        assets,
        instance,
        cpus: 1,
        memoryMiB: 512,
        accel: "tcg",
        disk: { kind: "nbd", socket: nbd.socket, exportName: "root" },
        mounts: [{ tag: "hostdir", hostPath: shared, readOnly: true }],
      });
      const owner = JSON.parse(await Deno.readTextFile(join(instance.dir, "owner.json")));
      assertEquals(owner.vm.pid, vm.pid);
      const conn = await vm.agent;
      const lines = await readLines(conn, 2);
      conn.close();
      const line = lines[1] ?? "";
      const exit = await vm.exited;
      const context = `\nconsole:\n${exit.consoleTail}\nQEMU: ${exit.stderr}`;
      assert(
        lines[0]?.startsWith("ready "),
        `agent did not announce itself: ${lines[0]}${context}`,
      );
      assert(line.startsWith("{"), `no report from the agent: ${JSON.stringify(line)}${context}`);
      const report = JSON.parse(line);
      assert(/^\/dev\/vport\d+p\d+$/.test(report.port), report.port);
      assertEquals(report.pid1, "tini");
      assertEquals(report.hostname, "shuru");
      assertEquals(report.python, "42");
      assertEquals(report.mounted, "hello from the host\n");
      // The 5 GiB disk was grown into: the filesystem is past the 4 GiB image.
      assert(report.fsBytes > 4.5 * 1024 ** 3, `filesystem not grown: ${report.fsBytes} bytes`);
      assertEquals(exit.code, 0, context);
      assert(exit.poweredOff, context);
      const order = [
        "spawned",
        "kernel",
        "initramfs",
        "rootMounted",
        "agentStart",
        "exited",
      ] as const;
      for (let i = 1; i < order.length; i++) {
        const a = vm.phases[order[i - 1]!];
        const b = vm.phases[order[i]!];
        assert(
          a !== undefined && b !== undefined && a <= b,
          `phases out of order: ${JSON.stringify(vm.phases)}`,
        );
      }
      const log = await Deno.readTextFile(instance.consoleLog);
      assert(log.includes("shuru-init: agent start"), "console log lacks the init marker");
    } finally {
      nbd.child.kill("SIGKILL");
      await nbd.child.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a boot failure is reported with the console tail",
  sanitizeResources: false,
  fn: async () => {
    const assets = await testAssets();
    const dir = await Deno.makeTempDir({ prefix: "shuru-boot-" });
    try {
      // No root disk: the initramfs gives up waiting for it and powers off.
      const vm = await new QemuBackend().start({
        kernel: assets.kernel,
        initrd: assets.initramfs,
        cmdline: kernelCmdline({ tscKhz: (await hostTscRate())?.khz, moduleGroups: [] }),
        cpus: 1,
        memoryMiB: 256,
        accel: "tcg",
        agentSocket: join(dir, "agent.sock"),
        consoleLog: join(dir, "console.log"),
      });
      let message = "";
      try {
        await vm.waitFor("agentStart");
      } catch (err) {
        message = (err as Error).message;
      }
      assert(message.includes("before agentStart"), message);
      assert(message.includes("no root disk after 5 s"), message);
      (await vm.agent).close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a kernel panic is reported as such, not as a power-off",
  sanitizeResources: false,
  fn: async () => {
    const assets = await testAssets();
    const dir = await Deno.makeTempDir({ prefix: "shuru-panic-" });
    try {
      // No init in the initramfs and no root disk: the kernel panics (panic=-1 resets at once).
      const vm = await new QemuBackend().start({
        kernel: assets.kernel,
        initrd: assets.initramfs,
        cmdline: kernelCmdline({ tscKhz: (await hostTscRate())?.khz, extra: ["rdinit=/nope"] }),
        cpus: 1,
        memoryMiB: 256,
        accel: "tcg",
        agentSocket: join(dir, "agent.sock"),
        consoleLog: join(dir, "console.log"),
      });
      const exit = await vm.exited;
      (await vm.agent).close();
      assert(exit.panic.includes("Kernel panic"), `no panic seen: ${exit.consoleTail}`);
      assertEquals(exit.poweredOff, false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "no QEMU outlives its owner, even when the owner is SIGKILLed; stop() ends a VM",
  sanitizeResources: false,
  fn: async () => {
    const assets = await testAssets();
    const dir = await Deno.makeTempDir({ prefix: "shuru-orphan-" });
    try {
      const script = join(dir, "owner.ts");
      const qemuModule = new URL("../vm/mod.ts", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { QemuBackend } from ${JSON.stringify(qemuModule)};
const vm = await new QemuBackend().start({
  kernel: ${JSON.stringify(assets.kernel)}, initrd: ${JSON.stringify(assets.initramfs)},
  cmdline: "console=ttyS0 quiet", cpus: 1, memoryMiB: 256, accel: "tcg",
  agentSocket: ${JSON.stringify(join(dir, "agent.sock"))},
  consoleLog: ${JSON.stringify(join(dir, "console.log"))},
});
console.log(vm.pid);
await new Promise(() => {});
`,
      );
      const owner = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", script],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = new LineReader(owner.stdout);
      const value = await reader.next();
      const qemuPid = Number(value?.trim());
      assert(qemuPid > 0, `owner printed ${value}`);
      const state = async () => {
        try {
          const stat = await Deno.readTextFile(`/proc/${qemuPid}/stat`);
          return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        } catch {
          return "gone";
        }
      };
      assert((await state()) !== "gone", "QEMU is not running");
      owner.kill("SIGKILL");
      await owner.status;
      await reader.cancel().catch(() => {});
      // The kernel signals QEMU as the owner dies; a busy machine may take a while to run it.
      let s = await state();
      for (let i = 0; i < 3000 && s !== "gone" && s !== "Z"; i++) {
        await new Promise((r) => setTimeout(r, 10));
        s = await state();
      }
      assert(s === "gone" || s === "Z", `QEMU ${qemuPid} survived its owner (state ${s})`);

      // stop(): SIGTERM, QEMU exits; not a guest power-off.
      const vm = await new QemuBackend().start({
        kernel: assets.kernel,
        initrd: assets.initramfs,
        cmdline: "console=ttyS0 quiet",
        cpus: 1,
        memoryMiB: 256,
        accel: "tcg",
        agentSocket: join(dir, "agent2.sock"),
        consoleLog: join(dir, "console2.log"),
      });
      const exit = await vm.stop(3000);
      assert(!exit.poweredOff);
      (await vm.agent).close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
