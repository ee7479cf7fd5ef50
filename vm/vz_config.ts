/**
 * The Virtualization.framework (VZ) machine as plain data: {@linkcode vzConfig} turns a
 * {@linkcode VmConfig} into a {@linkcode VzConfig}, {@linkcode validateVzConfig} checks it
 * against the framework's documented constraints, and only then does `vz_driver.ts` turn it into
 * framework objects. Everything here is pure and runs (and is tested) on any OS.
 *
 * Constraints checked, each from Apple's documentation of the class that enforces it:
 * - `VZVirtualMachineConfiguration`: CPU count within `minimumAllowedCPUCount` …
 *   `maximumAllowedCPUCount`; memory a multiple of 1 MiB within `minimumAllowedMemorySize` …
 *   `maximumAllowedMemorySize` (the limits are read from the framework at run time; see
 *   {@linkcode VzLimits}).
 * - `VZLinuxBootLoader`: file URLs (absolute paths); on Apple silicon the kernel must be an
 *   uncompressed arm64 `Image` (a compressed one makes the VM hang: {@linkcode checkKernelImage}).
 * - `VZNetworkBlockDeviceStorageDeviceAttachment` (macOS 14): a URL in the NBD URI format
 *   (`nbd+unix:///EXPORT?socket=PATH`), a positive timeout.
 * - `VZVirtioFileSystemDeviceConfiguration.validateTag:`: a tag of 1-36 UTF-8 bytes (the
 *   virtio-fs config field), unique per VM.
 * - `VZFileHandleNetworkDeviceAttachment.maximumTransmissionUnit` (macOS 13): 1500-65535.
 * - Unix socket paths: 103 bytes on macOS (`sun_path` is 104 with the NUL).
 *
 * @module
 */

import { maxSocketPath } from "../ffi/mod.ts";
import { ROOT_SERIAL, TOOLS_SERIAL } from "../proto/mod.ts";
import { VmError } from "./errors.ts";
import type { VmConfig } from "./types.ts";

/** The guest's name for the agent's console port (also the virtio-serial port name on QEMU). */
export const VZ_AGENT_PORT = "shuru.agent";

/** Documented bounds of file-handle network attachments (`maximumTransmissionUnit`). */
export const VZ_MTU = { min: 1500, max: 65535 } as const;

/** virtio-fs tags are at most 36 bytes (virtio spec `struct virtio_fs_config`). */
export const VZ_TAG_MAX_BYTES = 36;

/** arm64 Linux's `COMMAND_LINE_SIZE`, the longest command line the kernel keeps. */
export const ARM64_COMMAND_LINE_MAX = 2048;

/** Seconds VZ's NBD client waits on our server before it reconnects. */
export const NBD_TIMEOUT_SECONDS = 30;

/** The framework's CPU and memory limits (class properties of VZVirtualMachineConfiguration). */
export interface VzLimits {
  minCpus: number;
  maxCpus: number;
  /** Bytes. */
  minMemory: number;
  /** Bytes. */
  maxMemory: number;
}

/**
 * A storage device: our NBD server, or a raw disk image file. `identifier` is the virtio-blk
 * serial number the guest reads (`blockDeviceIdentifier`, macOS 12.3): shuru's initramfs tells
 * the root disk from the tools disk by it.
 */
export type VzStorage =
  & { identifier?: string }
  & (
    | {
      kind: "nbd";
      /** `nbd+unix:///EXPORT?socket=PATH`. */
      url: string;
      /** The socket path in the URL (checked for length). */
      socket: string;
      timeoutSeconds: number;
      forcedReadOnly: boolean;
      /** `full` forwards the guest's flushes; `none` drops them. */
      synchronization: "full" | "none";
    }
    | { kind: "image"; path: string; readOnly: boolean }
  );

/** The whole machine. */
export interface VzConfig {
  /** `VZLinuxBootLoader`. */
  bootLoader: { kernel: string; initrd: string; commandLine: string };
  /**
   * `VZGenericPlatformConfiguration`: the machine identifier's data representation, or null for
   * a new one (a restore needs the identifier the saved machine had).
   */
  machineIdentifier: Uint8Array | null;
  cpuCount: number;
  /** Bytes. */
  memorySize: number;
  /** Virtio block devices, in order (the first is `/dev/vda`). */
  storage: VzStorage[];
  /** Virtio console serial ports (the first is `hvc0`), each on a Unix socket we listen on. */
  serialPorts: { socket: string }[];
  /** Named virtio console ports (`/dev/virtio-ports/NAME`), each on a socket we listen on. */
  consolePorts: { name: string; socket: string }[];
  /** virtio-fs shares. */
  directoryShares: { tag: string; path: string; readOnly: boolean }[];
  /**
   * Virtio network devices, each on one end of a datagram socket pair (`fd`, borrowed from the
   * network stack, which reads one Ethernet frame per datagram on the other end); `fd` is null
   * when the network came as a socket path, which VZ cannot take (a validation problem).
   */
  network: { fd: number | null; mac: string; mtu: number }[];
  /** A virtio entropy device. */
  entropy: boolean;
}

/** Options of {@linkcode vzConfig}. */
export interface VzConfigOptions {
  /** The framework's limits; CPUs and memory are clamped to them. */
  limits: VzLimits;
  /** The console socket we listen on (serial port `hvc0`). */
  consoleSocket: string;
  /** Persisted machine identifier (null: a new one). */
  machineIdentifier?: Uint8Array | null;
  /** Returns 6 random bytes (for a MAC address). @default crypto.getRandomValues */
  random?: () => Uint8Array;
}

/** What {@linkcode vzConfig} changed to fit the limits (for a notice). */
export interface VzAdjustments {
  /** `[asked, given]` when the CPU count was clamped. */
  cpus?: [number, number];
  /** `[asked, given]` in MiB when memory was rounded or clamped. */
  memoryMiB?: [number, number];
}

const MIB = 1024 * 1024;

/**
 * The NBD URI for export `exportName` on the Unix socket `socket` (NBD's `doc/uri.md`):
 * `nbd+unix:///EXPORT?socket=PATH`, each part percent-encoded except `/` in the path.
 */
export function nbdUnixUrl(exportName: string, socket: string): string {
  const encode = (s: string, keep: RegExp) =>
    [...new TextEncoder().encode(s)].map((b) => {
      const c = String.fromCharCode(b);
      return b < 0x80 && keep.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
    }).join("");
  return `nbd+unix:///${encode(exportName, /[A-Za-z0-9._~-]/)}?socket=${
    encode(socket, /[A-Za-z0-9._~/-]/)
  }`;
}

/** A random locally administered unicast MAC address (`x2:…`, `x6:…`, `xA:…`, `xE:…`). */
export function randomMac(
  random: () => Uint8Array = () => crypto.getRandomValues(new Uint8Array(6)),
): string {
  const b = random().slice(0, 6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** `value` clamped into `[min, max]`. */
function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/**
 * The VZ machine for `config`: CPUs and memory clamped to `limits` (memory rounded down to
 * whole MiB), the NBD disk as an `nbd+unix` URL, the agent's socket as console port
 * `shuru.agent`, the console on `consoleSocket`, mounts as virtio-fs shares, the network device
 * on the VM's end of the stack's datagram socket pair, an entropy device.
 */
export function vzConfig(
  config: VmConfig,
  options: VzConfigOptions,
): { vz: VzConfig; adjusted: VzAdjustments } {
  const { limits } = options;
  const adjusted: VzAdjustments = {};
  const cpus = clamp(config.cpus, limits.minCpus, limits.maxCpus);
  if (cpus !== config.cpus) adjusted.cpus = [config.cpus, cpus];
  const minMiB = Math.ceil(limits.minMemory / MIB);
  const maxMiB = Math.floor(limits.maxMemory / MIB);
  const memoryMiB = clamp(Math.floor(config.memoryMiB), minMiB, maxMiB);
  if (memoryMiB !== config.memoryMiB) adjusted.memoryMiB = [config.memoryMiB, memoryMiB];
  const storage: VzStorage[] = [];
  const disk = config.disk;
  if (disk?.kind === "nbd") {
    storage.push({
      kind: "nbd",
      url: nbdUnixUrl(disk.exportName, disk.socket),
      socket: disk.socket,
      timeoutSeconds: NBD_TIMEOUT_SECONDS,
      forcedReadOnly: disk.readOnly ?? false,
      synchronization: "full",
      identifier: ROOT_SERIAL,
    });
  } else if (disk?.kind === "file") {
    storage.push({
      kind: "image",
      path: disk.path,
      readOnly: disk.readOnly ?? false,
      identifier: ROOT_SERIAL,
    });
  }
  if (config.tools !== undefined) {
    storage.push({ kind: "image", path: config.tools, readOnly: true, identifier: TOOLS_SERIAL });
  }
  const network: VzConfig["network"] = [];
  if (config.net) {
    network.push({
      fd: config.net.transport === "pair" && config.net.fd !== undefined ? config.net.fd : null,
      mac: config.net.mac ?? randomMac(options.random),
      mtu: config.net.mtu ?? VZ_MTU.min,
    });
  }
  return {
    vz: {
      bootLoader: { kernel: config.kernel, initrd: config.initrd, commandLine: config.cmdline },
      machineIdentifier: options.machineIdentifier ?? null,
      cpuCount: cpus,
      memorySize: memoryMiB * MIB,
      storage,
      serialPorts: [{ socket: options.consoleSocket }],
      consolePorts: [{ name: VZ_AGENT_PORT, socket: config.agentSocket }],
      directoryShares: (config.mounts ?? []).map((m) => ({
        tag: m.tag,
        path: m.hostPath,
        readOnly: m.readOnly,
      })),
      network,
      entropy: true,
    },
    adjusted,
  };
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/**
 * Every way `vz` breaks a documented constraint, one sentence each (empty when valid). The
 * socket path limit is macOS's, whatever OS this runs on.
 */
export function validateVzConfig(vz: VzConfig, limits: VzLimits): string[] {
  const problems: string[] = [];
  const bytes = (s: string) => new TextEncoder().encode(s).length;
  const socketMax = maxSocketPath("darwin");
  const socket = (what: string, path: string) => {
    if (!path.startsWith("/")) problems.push(`${what} socket ${path} is not an absolute path`);
    else if (bytes(path) > socketMax) {
      problems.push(
        `${what} socket ${path} is ${bytes(path)} bytes, more than macOS allows ` +
          `(${socketMax}); set SHURU_HOME to a shorter path`,
      );
    }
  };
  const absolute = (what: string, path: string) => {
    if (!path.startsWith("/")) problems.push(`${what} ${path} is not an absolute path`);
  };

  absolute("the kernel", vz.bootLoader.kernel);
  absolute("the initramfs", vz.bootLoader.initrd);
  const cmdline = vz.bootLoader.commandLine;
  if (cmdline.includes("\0") || cmdline.includes("\n")) {
    problems.push("the kernel command line has a NUL or newline");
  }
  if (bytes(cmdline) >= ARM64_COMMAND_LINE_MAX) {
    problems.push(`the kernel command line is longer than ${ARM64_COMMAND_LINE_MAX - 1} bytes`);
  }
  if (!/(^| )console=hvc0( |$)/.test(cmdline)) {
    problems.push("the kernel command line lacks console=hvc0 (the virtio console)");
  }
  if (/(^| )pci=off( |$)/.test(cmdline)) {
    problems.push("the kernel command line has pci=off, but VZ's virtio devices are on PCI");
  }
  if (vz.machineIdentifier !== null && vz.machineIdentifier.length === 0) {
    problems.push("the machine identifier is empty");
  }
  if (
    !Number.isInteger(vz.cpuCount) || vz.cpuCount < limits.minCpus || vz.cpuCount > limits.maxCpus
  ) {
    problems.push(`cpus must be ${limits.minCpus}-${limits.maxCpus}, got ${vz.cpuCount}`);
  }
  if (!Number.isInteger(vz.memorySize / MIB)) {
    problems.push(`memory must be a multiple of 1 MiB, got ${vz.memorySize} bytes`);
  } else if (vz.memorySize < limits.minMemory || vz.memorySize > limits.maxMemory) {
    problems.push(
      `memory must be ${Math.ceil(limits.minMemory / MIB)}-${Math.floor(limits.maxMemory / MIB)} ` +
        `MiB, got ${vz.memorySize / MIB}`,
    );
  }
  if (vz.storage.length === 0) problems.push("there is no root disk");
  for (const disk of vz.storage) {
    if (disk.kind === "image") {
      absolute("the disk image", disk.path);
      continue;
    }
    socket("the NBD", disk.socket);
    if (!disk.url.startsWith("nbd+unix:///") || !/\?socket=\//.test(disk.url)) {
      problems.push(`the NBD URL ${disk.url} is not nbd+unix:///EXPORT?socket=/PATH`);
    } else if (disk.url.startsWith("nbd+unix:///?")) {
      problems.push("the NBD export name is empty");
    }
    if (!(disk.timeoutSeconds > 0)) problems.push("the NBD timeout must be positive");
  }
  if (vz.serialPorts.length === 0) problems.push("there is no serial console");
  for (const port of vz.serialPorts) socket("the console", port.socket);
  const names = new Set<string>();
  for (const port of vz.consolePorts) {
    if (port.name === "") problems.push("a console port has an empty name");
    if (names.has(port.name)) problems.push(`console port ${port.name} is used twice`);
    names.add(port.name);
    socket(`console port ${port.name}'s`, port.socket);
  }
  const tags = new Set<string>();
  for (const share of vz.directoryShares) {
    const n = bytes(share.tag);
    if (n === 0 || n > VZ_TAG_MAX_BYTES) {
      problems.push(`share tag ${JSON.stringify(share.tag)} must be 1-${VZ_TAG_MAX_BYTES} bytes`);
    }
    if (tags.has(share.tag)) problems.push(`share tag ${share.tag} is used twice`);
    tags.add(share.tag);
    absolute(`share ${share.tag}'s folder`, share.path);
  }
  for (const net of vz.network) {
    if (net.fd === null) {
      problems.push(
        "the network must be one end of a datagram socket pair (transport pair), not a socket path",
      );
    } else if (!Number.isInteger(net.fd) || net.fd < 0) {
      problems.push(`the network's file descriptor ${net.fd} is not one`);
    }
    if (!Number.isInteger(net.mtu) || net.mtu < VZ_MTU.min || net.mtu > VZ_MTU.max) {
      problems.push(`MTU must be ${VZ_MTU.min}-${VZ_MTU.max}, got ${net.mtu}`);
    }
    if (!MAC_RE.test(net.mac)) {
      problems.push(`MAC address ${net.mac} is malformed`);
    } else if ((parseInt(net.mac.slice(0, 2), 16) & 1) === 1) {
      problems.push(`MAC address ${net.mac} is a multicast address`);
    }
  }
  return problems;
}

/**
 * Throws when `vz` breaks a constraint, listing every problem.
 *
 * @throws {VmError} `invalid_config`.
 */
export function checkVzConfig(vz: VzConfig, limits: VzLimits): void {
  const problems = validateVzConfig(vz, limits);
  if (problems.length === 1) {
    throw new VmError("invalid_config", `Cannot configure the VM: ${problems[0]}`);
  }
  if (problems.length > 1) {
    throw new VmError(
      "invalid_config",
      `Cannot configure the VM:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
  }
}

/** Offset and value of the arm64 Linux `Image` header's magic ("ARM\x64", little endian). */
const ARM64_IMAGE_MAGIC = { offset: 0x38, value: 0x644d5241 } as const;

/**
 * Checks the first 64 bytes of a kernel file: `undefined` when it is an uncompressed arm64
 * `Image`, else why not (Documentation/arch/arm64/booting.rst: `magic` at offset 0x38).
 */
export function checkKernelImage(header: Uint8Array): string | undefined {
  if (header.length >= 2 && header[0] === 0x1f && header[1] === 0x8b) {
    return "the kernel is gzip-compressed; VZ needs the uncompressed arm64 Image (gunzip it)";
  }
  if (header.length >= 4 && header[0] === 0x7f && header[1] === 0x45 && header[2] === 0x4c) {
    return "the kernel is an ELF file; VZ needs the arm64 Image (arch/arm64/boot/Image)";
  }
  if (header.length < ARM64_IMAGE_MAGIC.offset + 4) return "the kernel file is too short";
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (view.getUint32(ARM64_IMAGE_MAGIC.offset, true) !== ARM64_IMAGE_MAGIC.value) {
    return "the kernel is not an arm64 Linux Image (no ARM\\x64 magic at offset 0x38)";
  }
  return undefined;
}
