/**
 * The description of a machine that a memory snapshot belongs to. A machine state only loads
 * into the same machine: same QEMU build, guest architecture, machine type, CPU model, CPUs,
 * memory, devices in the same order, and the same guest (kernel, initramfs, tools disk, and the
 * kernel modules it loaded at boot). A
 * snapshot records this description; a restore compares it with the machine it would start
 * ({@linkcode machineMismatch}) and refuses, with the first difference, rather than letting
 * QEMU fail half-way or, worse, load into a different guest.
 *
 * @module
 */

import type { QmpVersion } from "./qmp.ts";
import type { VmConfig } from "./types.ts";
import { AGENT_PORT_NAME } from "./qemu_args.ts";
import { machineFor } from "./machine.ts";

/** Version of the description format (and of how the state is saved; see `migration.ts`). */
export const MACHINE_FORMAT = 2;

/** What a memory snapshot's machine state needs to load. JSON-serializable. */
export interface MachineDescription {
  /** {@linkcode MACHINE_FORMAT}. */
  format: number;
  /** How the state was written: `qemu-device-state` (`xen-save-devices-state`, no RAM). */
  stateFormat: string;
  /** The hypervisor and its build, e.g. `qemu 7.2.22 Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  hypervisor: string;
  /** Guest architecture (`x86_64`, `arm64`). */
  arch: string;
  /** Machine type and options. */
  machine: string;
  /** Accelerator. */
  accel: string;
  /** CPU model (`-cpu`). */
  cpu: string;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Devices in creation order (their state is matched by position and name). */
  devices: string[];
  /** Kernel image path (inside the content-addressed assets folder). */
  kernel: string;
  /** Initramfs path. */
  initrd: string;
  /** Tools disk path (inside the assets folder), or "" without one. */
  tools: string;
  /** Kernel module groups the initramfs loaded (`shuru.modules=`); "all" when not limited. */
  modules: string[];
}

/** The module groups a kernel command line asks the initramfs for. */
export function modulesOf(cmdline: string): string[] {
  const word = cmdline.split(" ").find((w) => w.startsWith("shuru.modules="));
  if (!word) return ["all"];
  const list = word.slice("shuru.modules=".length);
  return list === "none" ? [] : list.split(",").filter((g) => g !== "").sort();
}

/** Describes the machine `config` starts under QEMU `qemu` (from the monitor's greeting). */
export function describeMachine(config: VmConfig, qemu: QmpVersion): MachineDescription {
  const devices: string[] = [];
  if (config.disk) devices.push(`virtio-blk${config.disk.readOnly ? ":ro" : ""}`);
  if (config.tools !== undefined) devices.push("virtio-blk:tools:ro");
  devices.push(`virtio-serial:${AGENT_PORT_NAME}`);
  // Read-only is the host side's (-fsdev readonly=on), not the device's: a snapshot's 9p slot
  // may be given any folder, read-only or not, when it is restored.
  for (const m of config.mounts ?? []) devices.push(`virtio-9p:${m.tag}`);
  if (config.net) devices.push(`virtio-net${config.net.mtu ? `:mtu=${config.net.mtu}` : ""}`);
  if (config.vmGenerationId) devices.push("vmgenid");
  const machine = machineFor(config.arch);
  return {
    format: MACHINE_FORMAT,
    stateFormat: "qemu-device-state",
    hypervisor: `qemu ${qemu.major}.${qemu.minor}.${qemu.micro}` +
      (qemu.package ? ` ${qemu.package}` : ""),
    arch: machine.arch,
    machine: machine.machine,
    accel: config.accel,
    cpu: machine.cpu(config.accel),
    cpus: config.cpus,
    memoryMiB: config.memoryMiB,
    devices,
    kernel: config.kernel,
    initrd: config.initrd,
    tools: config.tools ?? "",
    modules: modulesOf(config.cmdline),
  };
}

/**
 * The first difference that keeps a snapshot of `saved` from loading into `wanted`, as a phrase
 * for "Cannot restore ...: <difference>", or `undefined` when they match. `saved` is untrusted
 * JSON from a manifest.
 */
export function machineMismatch(
  saved: Record<string, unknown>,
  wanted: MachineDescription,
): string | undefined {
  if (saved.format !== wanted.format) {
    return `it was saved in machine format ${
      JSON.stringify(saved.format)
    }, this shuru uses ${wanted.format}`;
  }
  const fields: [keyof MachineDescription, string][] = [
    ["stateFormat", "state format"],
    ["hypervisor", "hypervisor"],
    ["arch", "architecture"],
    ["machine", "machine type"],
    ["accel", "accelerator"],
    ["cpu", "CPU model"],
    ["cpus", "CPU count"],
    ["memoryMiB", "memory (MiB)"],
    ["devices", "devices"],
    ["kernel", "guest kernel"],
    ["initrd", "guest initramfs"],
    ["tools", "tools disk"],
    ["modules", "kernel modules"],
  ];
  for (const [key, label] of fields) {
    const a = JSON.stringify(saved[key]);
    const b = JSON.stringify(wanted[key]);
    if (a !== b) return `its ${label} was ${a}, this machine has ${b}`;
  }
  return undefined;
}
