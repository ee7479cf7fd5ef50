import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { VmError } from "./errors.ts";
import type { VmConfig } from "./types.ts";
import {
  checkKernelImage,
  checkVzConfig,
  nbdUnixUrl,
  randomMac,
  validateVzConfig,
  type VzConfig,
  vzConfig,
  type VzLimits,
} from "./vz_config.ts";

const MIB = 1024 * 1024;
/** Limits of the shape the framework reports (values for the test, not Apple's). */
const LIMITS: VzLimits = { minCpus: 1, maxCpus: 8, minMemory: 128 * MIB, maxMemory: 16384 * MIB };
const DIR = "/Users/dev/.local/share/shuru/instances/4242-abcd1234";

function vmConfig(overrides: Partial<VmConfig> = {}): VmConfig {
  return {
    kernel: "/Users/dev/.local/share/shuru/assets/v5-arm64/Image",
    initrd: "/Users/dev/.local/share/shuru/assets/v5-arm64/initramfs.cpio",
    cmdline: "console=hvc0 panic=-1 quiet",
    cpus: 2,
    memoryMiB: 2048,
    accel: "hvf",
    disk: { kind: "nbd", socket: `${DIR}/nbd.sock`, exportName: "root" },
    agentSocket: `${DIR}/agent.sock`,
    consoleLog: `${DIR}/console.log`,
    mounts: [{ tag: "shuru0", hostPath: "/Users/dev/src", readOnly: true }],
    net: { transport: "pair", fd: 42, mac: "02:00:00:00:00:01", mtu: 1500 },
    ...overrides,
  };
}

const OPTIONS = { limits: LIMITS, consoleSocket: `${DIR}/console.sock` };

Deno.test("vzConfig - a shuru run as VZ devices", () => {
  const { vz, adjusted } = vzConfig(vmConfig(), OPTIONS);
  assertEquals(adjusted, {});
  assertEquals(vz, {
    bootLoader: {
      kernel: "/Users/dev/.local/share/shuru/assets/v5-arm64/Image",
      initrd: "/Users/dev/.local/share/shuru/assets/v5-arm64/initramfs.cpio",
      commandLine: "console=hvc0 panic=-1 quiet",
    },
    machineIdentifier: null,
    cpuCount: 2,
    memorySize: 2048 * MIB,
    storage: [{
      kind: "nbd",
      url: `nbd+unix:///root?socket=${DIR}/nbd.sock`,
      socket: `${DIR}/nbd.sock`,
      timeoutSeconds: 30,
      forcedReadOnly: false,
      synchronization: "full",
      identifier: "shuru-root",
    }],
    serialPorts: [{ socket: `${DIR}/console.sock` }],
    consolePorts: [{ name: "shuru.agent", socket: `${DIR}/agent.sock` }],
    directoryShares: [{ tag: "shuru0", path: "/Users/dev/src", readOnly: true }],
    // The VM's end of the stack's socket pair, as it came.
    network: [{ fd: 42, mac: "02:00:00:00:00:01", mtu: 1500 }],
    entropy: true,
  });
  assertEquals(validateVzConfig(vz, LIMITS), []);
  checkVzConfig(vz, LIMITS);
});

Deno.test("vzConfig - the tools disk is a read-only image the guest finds by its identifier", () => {
  const { vz } = vzConfig(vmConfig({ tools: "/Users/dev/assets/tools.ext4" }), OPTIONS);
  assertEquals(vz.storage[1], {
    kind: "image",
    path: "/Users/dev/assets/tools.ext4",
    readOnly: true,
    identifier: "shuru-tools",
  });
});

Deno.test("vzConfig - CPUs and memory are clamped to the framework's limits", () => {
  const big = vzConfig(vmConfig({ cpus: 64, memoryMiB: 65536 }), OPTIONS);
  assertEquals(big.vz.cpuCount, 8);
  assertEquals(big.vz.memorySize, 16384 * MIB);
  assertEquals(big.adjusted, { cpus: [64, 8], memoryMiB: [65536, 16384] });
  const small = vzConfig(vmConfig({ memoryMiB: 64 }), OPTIONS);
  assertEquals(small.vz.memorySize, 128 * MIB);
  assertEquals(validateVzConfig(big.vz, LIMITS), []);
  assertEquals(validateVzConfig(small.vz, LIMITS), []);
});

Deno.test("vzConfig - a persisted machine identifier and a random MAC", () => {
  const id = new Uint8Array([1, 2, 3]);
  const { vz } = vzConfig(vmConfig({ net: { transport: "pair", fd: 7 } }), {
    ...OPTIONS,
    machineIdentifier: id,
    random: () => new Uint8Array([0xff, 1, 2, 3, 4, 5]),
  });
  assertEquals(vz.machineIdentifier, id);
  // Locally administered (bit 1 set), unicast (bit 0 clear); VZ's minimum MTU by default.
  assertEquals(vz.network[0]!.mac, "fe:01:02:03:04:05");
  assertEquals(vz.network[0]!.mtu, 1500);
  for (let i = 0; i < 50; i++) {
    const first = parseInt(randomMac().slice(0, 2), 16);
    assertEquals(first & 3, 2);
  }
});

Deno.test("nbdUnixUrl - NBD's URI format, percent-encoding what a URL cannot hold", () => {
  assertEquals(nbdUnixUrl("root", "/tmp/x/nbd.sock"), "nbd+unix:///root?socket=/tmp/x/nbd.sock");
  assertEquals(
    nbdUnixUrl("a b", "/Users/J Doe/nbd?.sock"),
    "nbd+unix:///a%20b?socket=/Users/J%20Doe/nbd%3F.sock",
  );
  assertEquals(nbdUnixUrl("é", "/s"), "nbd+unix:///%C3%A9?socket=/s");
});

/** A valid machine to break one field at a time. */
function valid(): VzConfig {
  return vzConfig(vmConfig(), OPTIONS).vz;
}

Deno.test("validateVzConfig - each documented constraint is checked", () => {
  const cases: [string, (vz: VzConfig) => void][] = [
    ["the kernel relative is not an absolute path", (vz) => vz.bootLoader.kernel = "relative"],
    [
      "the kernel command line lacks console=hvc0 (the virtio console)",
      (vz) => vz.bootLoader.commandLine = "console=ttyS0 quiet",
    ],
    [
      "the kernel command line has pci=off, but VZ's virtio devices are on PCI",
      (vz) => vz.bootLoader.commandLine += " pci=off",
    ],
    [
      "the kernel command line is longer than 2047 bytes",
      (vz) => vz.bootLoader.commandLine += " " + "x".repeat(2048),
    ],
    ["cpus must be 1-8, got 9", (vz) => vz.cpuCount = 9],
    ["cpus must be 1-8, got 0", (vz) => vz.cpuCount = 0],
    [
      `memory must be a multiple of 1 MiB, got ${2048 * MIB + 4096} bytes`,
      (vz) => vz.memorySize += 4096,
    ],
    ["memory must be 128-16384 MiB, got 64", (vz) => vz.memorySize = 64 * MIB],
    ["there is no root disk", (vz) => vz.storage = []],
    [
      "the NBD URL nbd://localhost/root is not nbd+unix:///EXPORT?socket=/PATH",
      (vz) => (vz.storage[0] as { url: string }).url = "nbd://localhost/root",
    ],
    [
      "the NBD export name is empty",
      (vz) => (vz.storage[0] as { url: string }).url = "nbd+unix:///?socket=/tmp/s",
    ],
    [
      "the NBD timeout must be positive",
      (vz) => (vz.storage[0] as { timeoutSeconds: number }).timeoutSeconds = 0,
    ],
    ["console port shuru.agent is used twice", (vz) => vz.consolePorts.push(vz.consolePorts[0]!)],
    [
      `share tag "${"t".repeat(37)}" must be 1-36 bytes`,
      (vz) => vz.directoryShares[0]!.tag = "t".repeat(37),
    ],
    ["share tag shuru0 is used twice", (vz) => vz.directoryShares.push(vz.directoryShares[0]!)],
    ["MTU must be 1500-65535, got 1400", (vz) => vz.network[0]!.mtu = 1400],
    ["MTU must be 1500-65535, got 65536", (vz) => vz.network[0]!.mtu = 65536],
    [
      "MAC address 01:00:5e:00:00:01 is a multicast address",
      (vz) => vz.network[0]!.mac = "01:00:5e:00:00:01",
    ],
    ["MAC address 02:00:00 is malformed", (vz) => vz.network[0]!.mac = "02:00:00"],
    ["the network's file descriptor -1 is not one", (vz) => vz.network[0]!.fd = -1],
    ["the machine identifier is empty", (vz) => vz.machineIdentifier = new Uint8Array(0)],
  ];
  for (const [problem, breakIt] of cases) {
    const vz = valid();
    breakIt(vz);
    assertEquals(validateVzConfig(vz, LIMITS), [problem]);
  }
});

Deno.test("vzConfig - a network on socket paths (QEMU's shapes) is a problem, not a device", () => {
  for (
    const net of [{ socket: `${DIR}/net.sock` }, { transport: "dgram" as const, socket: "/s" }]
  ) {
    const { vz } = vzConfig(vmConfig({ net }), OPTIONS);
    assertEquals(vz.network[0]!.fd, null);
    assertEquals(validateVzConfig(vz, LIMITS), [
      "the network must be one end of a datagram socket pair (transport pair), not a socket path",
    ]);
  }
});

Deno.test("validateVzConfig - socket paths longer than macOS's 103 bytes are refused", () => {
  const long = "/" + "d".repeat(95);
  const { vz } = vzConfig(vmConfig({ agentSocket: `${long}/agent.sock` }), OPTIONS);
  assertEquals(validateVzConfig(vz, LIMITS), [
    `console port shuru.agent's socket ${long}/agent.sock is 107 bytes, more than macOS ` +
    "allows (103); set SHURU_HOME to a shorter path",
  ]);
});

Deno.test("checkVzConfig - one problem in one line, several as a list", () => {
  const vz = valid();
  vz.cpuCount = 99;
  const one = assertThrows(() => checkVzConfig(vz, LIMITS));
  assert(one instanceof VmError && one.code === "invalid_config");
  assertEquals(one.message, "Cannot configure the VM: cpus must be 1-8, got 99");
  vz.network[0]!.mtu = 1;
  assertEquals(
    assertThrows(() => checkVzConfig(vz, LIMITS)).message,
    "Cannot configure the VM:\n  - cpus must be 1-8, got 99\n  - MTU must be 1500-65535, got 1",
  );
});

/** The first 64 bytes of an arm64 Image (Documentation/arch/arm64/booting.rst). */
function imageHeader(): Uint8Array {
  const h = new Uint8Array(64);
  const v = new DataView(h.buffer);
  v.setUint32(0, 0xfa405a4d, true); // code0 ("MZ" + branch, the EFI stub)
  v.setBigUint64(8, 0n, true); // text_offset
  v.setBigUint64(16, 0x2000000n, true); // image_size
  v.setBigUint64(24, 0xan, true); // flags
  v.setUint32(56, 0x644d5241, true); // "ARM\x64"
  return h;
}

Deno.test("checkKernelImage - only an uncompressed arm64 Image passes", () => {
  assertEquals(checkKernelImage(imageHeader()), undefined);
  assertEquals(
    checkKernelImage(new Uint8Array([0x1f, 0x8b, 8, 0, ...new Uint8Array(60)])),
    "the kernel is gzip-compressed; VZ needs the uncompressed arm64 Image (gunzip it)",
  );
  assertEquals(
    checkKernelImage(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, ...new Uint8Array(60)])),
    "the kernel is an ELF file; VZ needs the arm64 Image (arch/arm64/boot/Image)",
  );
  assertEquals(checkKernelImage(new Uint8Array(10)), "the kernel file is too short");
  const x86 = imageHeader();
  x86[56] = 0;
  assert(checkKernelImage(x86)!.startsWith("the kernel is not an arm64 Linux Image"));
});
