import { assertEquals } from "../tests/_assert.ts";
import { describeMachine, machineMismatch, modulesOf } from "./machine_description.ts";
import type { VmConfig } from "./types.ts";

const config: VmConfig = {
  kernel: "/a/v1-x/vmlinux",
  initrd: "/a/v1-x/initramfs.img",
  cmdline: "console=ttyS0 quiet shuru.modules=overlay,9p",
  cpus: 2,
  memoryMiB: 2048,
  accel: "tcg",
  disk: { kind: "nbd", socket: "/i/nbd.sock", exportName: "root" },
  agentSocket: "/i/agent.sock",
  consoleLog: "/i/console.log",
  tools: "/a/v1-x/tools.ext4",
  mounts: [{ tag: "shuru0", hostPath: "/h", readOnly: true }],
};
const qemu = { major: 7, minor: 2, micro: 22, package: "Debian 1:7.2+dfsg-7" };

Deno.test("describeMachine - what a state needs: QEMU, CPUs, memory, devices in order, guest", () => {
  assertEquals(describeMachine(config, qemu), {
    format: 2,
    stateFormat: "qemu-device-state",
    hypervisor: "qemu 7.2.22 Debian 1:7.2+dfsg-7",
    arch: "x86_64",
    machine: "microvm,acpi=on,pit=on",
    accel: "tcg",
    cpu: "max",
    cpus: 2,
    memoryMiB: 2048,
    devices: ["virtio-blk", "virtio-blk:tools:ro", "virtio-serial:shuru.agent", "virtio-9p:shuru0"],
    kernel: "/a/v1-x/vmlinux",
    initrd: "/a/v1-x/initramfs.img",
    tools: "/a/v1-x/tools.ext4",
    modules: ["9p", "overlay"],
  });
  // A 9p slot restores with any folder, read-only or not: the flag is the host's.
  const rw = { ...config, mounts: [{ tag: "shuru0", hostPath: "/o", readOnly: false }] };
  assertEquals(describeMachine(rw, qemu).devices, describeMachine(config, qemu).devices);
  const arm = describeMachine({ ...config, arch: "arm64" }, qemu);
  assertEquals([arm.arch, arm.machine, arm.cpu], [
    "arm64",
    "virt,gic-version=max",
    "max,pauth=off",
  ]);
  assertEquals(modulesOf("quiet"), ["all"]);
  assertEquals(modulesOf("shuru.modules=none"), []);
});

Deno.test("machineMismatch - names the first difference; a JSON round trip matches", () => {
  const m = describeMachine(config, qemu);
  assertEquals(machineMismatch(JSON.parse(JSON.stringify(m)), m), undefined);
  assertEquals(
    machineMismatch({ ...m, memoryMiB: 1024 }, m),
    "its memory (MiB) was 1024, this machine has 2048",
  );
  assertEquals(
    machineMismatch({ ...m, hypervisor: "qemu 8.2.0" }, m),
    'its hypervisor was "qemu 8.2.0", this machine has "qemu 7.2.22 Debian 1:7.2+dfsg-7"',
  );
  const net = describeMachine({ ...config, net: { socket: "/i/net.sock" } }, qemu);
  assertEquals(
    machineMismatch(m as unknown as Record<string, unknown>, net)?.startsWith("its devices"),
    true,
  );
  assertEquals(
    machineMismatch({ ...m, tools: "/a/v2-x/tools.ext4" }, m),
    'its tools disk was "/a/v2-x/tools.ext4", this machine has "/a/v1-x/tools.ext4"',
  );
  assertEquals(
    machineMismatch({ format: 9 }, m),
    "it was saved in machine format 9, this shuru uses 2",
  );
});
