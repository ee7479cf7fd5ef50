import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { createBackend, defaultBackend, parseBackend } from "./backend.ts";
import { kernelCmdline } from "./cmdline.ts";
import { VmError } from "./errors.ts";
import { validateVzConfig, vzConfig, type VzLimits } from "./vz_config.ts";

const LIMITS: VzLimits = { minCpus: 1, maxCpus: 8, minMemory: 2 ** 27, maxMemory: 2 ** 34 };

Deno.test("defaultBackend - VZ on macOS, QEMU elsewhere", () => {
  assertEquals(defaultBackend("darwin"), "vz");
  assertEquals(defaultBackend("linux"), "qemu");
  assertEquals(parseBackend(undefined, "darwin"), "vz");
  assertEquals(parseBackend(undefined, "linux"), "qemu");
  assertEquals(parseBackend("qemu", "darwin"), "qemu");
  assertEquals(parseBackend("vz", "darwin"), "vz");
});

Deno.test("parseBackend - --backend vz off macOS is refused in one line", () => {
  const err = assertThrows(() => parseBackend("vz", "linux"));
  assert(err instanceof VmError && err.code === "unsupported_host");
  assertEquals(
    err.message,
    "Cannot use --backend vz: it needs macOS (Apple's Virtualization.framework); this host runs linux",
  );
  assert(!err.message.includes("\n"));
  const bad = assertThrows(() => parseBackend("hvf", "darwin"));
  assertEquals(bad.message, 'Cannot use backend "hvf": use vz or qemu');
});

Deno.test("createBackend - the VZ backend's command line passes the VZ validator", () => {
  const vz = createBackend("vz");
  assertEquals(vz.name, "vz");
  assertEquals(createBackend("qemu").name, "qemu");
  const dir = "/Users/dev/.local/share/shuru/instances/1-a";
  const cmdline = kernelCmdline({ moduleGroups: ["net"], ...vz.cmdline });
  const { vz: machine } = vzConfig({
    kernel: "/a/Image",
    initrd: "/a/initramfs",
    cmdline,
    cpus: 2,
    memoryMiB: 2048,
    accel: "hvf",
    disk: { kind: "nbd", socket: `${dir}/nbd.sock`, exportName: "root" },
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
  }, {
    limits: LIMITS,
    consoleSocket: `${dir}/console.sock`,
  });
  assertEquals(
    validateVzConfig(machine, { minCpus: 1, maxCpus: 8, minMemory: 2 ** 27, maxMemory: 2 ** 34 }),
    [],
  );
  // The QEMU machine's command line is refused for VZ (ttyS0, pci=off).
  const qemuLine = kernelCmdline({ moduleGroups: ["net"], ...createBackend("qemu").cmdline });
  assertEquals(
    validateVzConfig(
      { ...machine, bootLoader: { ...machine.bootLoader, commandLine: qemuLine } },
      LIMITS,
    ).length,
    2,
  );
});

Deno.test("guestCmdline - each backend's console, transport and mount drivers", async () => {
  const { guestCmdline } = await import("./launch.ts");
  const devices = { mounts: true, net: true };
  const vz = createBackend("vz");
  assertEquals([vz.mountTransport, vz.netTransport], ["virtiofs", "pair"]);
  const vzLine = guestCmdline("arm64", vz, devices).split(" ");
  assert(vzLine.includes("console=hvc0"), vzLine.join(" "));
  assert(vzLine.includes("shuru.modules=pci,virtiofs,overlay,net"), vzLine.join(" "));
  const qemu = createBackend("qemu");
  assertEquals([qemu.mountTransport, qemu.netTransport], [undefined, undefined]);
  const qemuLine = guestCmdline("arm64", qemu, devices).split(" ");
  assert(qemuLine.includes("console=ttyAMA0"), qemuLine.join(" "));
  assert(qemuLine.includes("shuru.modules=mmio,9p,overlay,net"), qemuLine.join(" "));
  // Nothing optional: the transport alone.
  assert(
    guestCmdline("x86_64", qemu, { mounts: false, net: false }).includes("shuru.modules=mmio"),
  );
});
