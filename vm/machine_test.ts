import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { resolveAccel } from "./accel.ts";
import { VmError } from "./errors.ts";
import { deviceModel, MACHINES } from "./machine.ts";
import { qemuArgs } from "./qemu_args.ts";
import type { VmConfig } from "./types.ts";

const arm: VmConfig = {
  arch: "arm64",
  kernel: "/a/Image",
  initrd: "/a/initramfs.img",
  cmdline: "console=ttyAMA0 quiet",
  cpus: 2,
  memoryMiB: 1024,
  accel: "tcg",
  disk: { kind: "nbd", socket: "/i/nbd.sock", exportName: "root" },
  agentSocket: "/i/agent.sock",
  consoleLog: "/i/console.log",
  tools: "/a/tools.ext4",
  mounts: [{ tag: "src", hostPath: "/src", readOnly: true }],
  net: { transport: "dgram", socket: "/i/net.sock", vmSocket: "/i/netvm.sock", mtu: 1500 },
};

function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

Deno.test("qemuArgs: an arm64 guest gets virt, a fast TCG CPU, the same virtio-mmio devices", () => {
  const args = qemuArgs(arm);
  assertEquals(values(args, "-M"), ["virt,gic-version=max"]);
  assertEquals(values(args, "-cpu"), ["max,pauth=off"]);
  assertEquals(values(qemuArgs({ ...arm, accel: "kvm" }), "-cpu"), ["host"]);
  const devices = values(args, "-device");
  for (
    const d of [
      "virtio-blk-device,drive=root,serial=shuru-root",
      "virtio-blk-device,drive=tools,serial=shuru-tools",
      "virtio-serial-device,max_ports=2",
      "virtio-9p-device,fsdev=fs0,mount_tag=src",
      "virtio-net-device,netdev=net0,host_mtu=1500",
    ]
  ) assert(devices.includes(d), `${d} in ${devices.join(" ")}`);
  assertEquals(values(args, "-netdev"), [
    "dgram,id=net0,local.type=unix,local.path=/i/netvm.sock,remote.type=unix,remote.path=/i/net.sock",
  ]);
});

Deno.test("machines: each knows its program, console and native accelerator", () => {
  assertEquals(MACHINES.x86_64.qemu, "qemu-system-x86_64");
  assertEquals(MACHINES.arm64.qemu, "qemu-system-aarch64");
  assertEquals([MACHINES.x86_64.console, MACHINES.arm64.console], ["ttyS0", "ttyAMA0"]);
  const linuxX86 = { os: "linux", arch: "x86_64" };
  const macArm = { os: "darwin", arch: "aarch64" };
  const linuxArm = { os: "linux", arch: "aarch64" };
  assertEquals(MACHINES.x86_64.nativeAccel(linuxX86), "kvm");
  assertEquals(MACHINES.arm64.nativeAccel(linuxX86), undefined);
  assertEquals(MACHINES.arm64.nativeAccel(linuxArm), "kvm");
  assertEquals(MACHINES.arm64.nativeAccel(macArm), "hvf");
  assertEquals(deviceModel({ ...MACHINES.arm64, transport: "pci" }, "net"), "virtio-net-pci");
});

Deno.test("resolveAccel: another architecture runs under TCG with a notice; kvm is refused", async () => {
  if (Deno.build.arch !== "x86_64") return; // the table above covers other hosts
  const options = {
    arch: "arm64" as const,
    kernel: "/k",
    initrd: "/i",
    cacheFile: "/c",
    workDir: "/w",
  };
  const auto = await resolveAccel("auto", options);
  assertEquals(auto.accel, "tcg");
  assert(auto.notice.includes("arm64 guest") && auto.notice.includes("emulation"), auto.notice);
  const err = await assertRejects(() => resolveAccel("kvm", options), "another architecture");
  assert(err instanceof VmError && err.code === "invalid_config");
  const tcg = await resolveAccel("tcg", options);
  assertEquals(tcg.accel, "tcg");
  assert(tcg.notice.includes("by emulation"), tcg.notice);
  assertEquals((await resolveAccel("tcg", { ...options, arch: "x86_64" })).notice, "");
});
