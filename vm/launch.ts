/**
 * Starting a shuru guest in one call: kernel command line (TSC rate, module groups), the QEMU
 * backend, the instance's sockets and log, and the owner record that `shuru prune` reads.
 *
 * @module
 */

import { kernelCmdline } from "./cmdline.ts";
import { type Instance, recordVmProcess } from "./instance.ts";
import { QemuBackend } from "./qemu.ts";
import { hostTscRate } from "./tsc.ts";
import type {
  Accel,
  DiskConfig,
  MemoryFile,
  MountConfig,
  NetConfig,
  Vm,
  VmBackend,
  VmConfig,
  VmSnapshotFiles,
} from "./types.ts";
import { type GuestArch, hostArch } from "../host/mod.ts";

/** Options of {@linkcode launchGuest}. */
export interface LaunchOptions {
  /**
   * Kernel, initramfs and the tools disk, e.g. from `ensureAssets()`, and their architecture
   * (default: the host's).
   */
  assets: { kernel: string; initramfs: string; tools?: string; arch?: GuestArch };
  /** The run's instance folder (`createInstance()`): sockets and console log go there. */
  instance: Instance;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Accelerator (resolve `auto` first with `resolveAccel()`). */
  accel: Accel;
  /** Root disk; for shuru's NBD server: `{ kind: "nbd", socket: instance.nbdSocket, ... }`. */
  disk: DiskConfig;
  /**
   * Host folders (virtio-9p, or the backend's `mountTransport`). Loads that filesystem's and the
   * overlay modules when present.
   */
  mounts?: MountConfig[];
  /** Network device. Loads the net modules when present. */
  net?: NetConfig;
  /** The serial console is the user's terminal. */
  interactiveConsole?: boolean;
  /** Kernel messages on the console. */
  verbose?: boolean;
  /** Host TSC rate in kHz (default: measured; x86_64 guests only). */
  tscKhz?: number;
  /** Backend (default: a new {@linkcode QemuBackend}). */
  backend?: VmBackend;
  /** Guest RAM in a file (`shared: true` to snapshot it later); anonymous memory when absent. */
  memory?: MemoryFile;
  /** VM generation ID exposed to the guest (a UUID); none when absent. */
  vmGenerationId?: string;
}

/**
 * The kernel command line for a guest of `arch` on `backend` with `devices`: the backend's
 * console and transport words, and only the module groups the devices need (each insmod costs
 * time under TCG).
 */
export function guestCmdline(
  arch: GuestArch,
  backend: Pick<VmBackend, "cmdline" | "mountTransport">,
  devices: { mounts: boolean; net: boolean; tscKhz?: number; verbose?: boolean },
): string {
  const groups: string[] = [];
  if (devices.mounts) groups.push(backend.mountTransport ?? "9p", "overlay");
  if (devices.net) groups.push("net");
  return kernelCmdline({
    arch,
    ...(devices.tscKhz !== undefined ? { tscKhz: devices.tscKhz } : {}),
    moduleGroups: groups,
    ...(devices.verbose ? { verbose: true } : {}),
    ...backend.cmdline,
  });
}

/**
 * The VM configuration {@linkcode launchGuest} starts (kernel command line included, with the
 * settings `backend`'s machine needs).
 */
export async function guestConfig(options: LaunchOptions, backend?: VmBackend): Promise<VmConfig> {
  const vmBackend: VmBackend = backend ?? options.backend ?? new QemuBackend();
  const mounts = options.mounts ?? [];
  const arch = options.assets.arch ?? hostArch();
  const tscKhz = arch !== "x86_64" ? undefined : options.tscKhz ?? (await hostTscRate())?.khz;
  return {
    arch,
    kernel: options.assets.kernel,
    initrd: options.assets.initramfs,
    cmdline: guestCmdline(arch, vmBackend, {
      mounts: mounts.length > 0,
      net: options.net !== undefined,
      ...(tscKhz !== undefined ? { tscKhz } : {}),
      ...(options.verbose ? { verbose: true } : {}),
    }),
    cpus: options.cpus,
    memoryMiB: options.memoryMiB,
    accel: options.accel,
    disk: options.disk,
    ...(options.assets.tools !== undefined ? { tools: options.assets.tools } : {}),
    agentSocket: options.instance.agentSocket,
    controlSocket: options.instance.controlSocket,
    consoleLog: options.instance.consoleLog,
    mounts,
    net: options.net,
    interactiveConsole: options.interactiveConsole,
    ...(options.memory ? { memory: options.memory } : {}),
    ...(options.vmGenerationId ? { vmGenerationId: options.vmGenerationId } : {}),
  };
}

/** Starts the guest; the agent channel is `vm.agent`, the end is `vm.exited`. */
export async function launchGuest(options: LaunchOptions): Promise<Vm> {
  const backend = options.backend ?? new QemuBackend();
  const vm = await backend.start(await guestConfig(options, backend));
  await recordVmProcess(options.instance, vm.pid);
  return vm;
}

/**
 * Starts the guest from a snapshot and returns it paused (call `vm.resume()`); the options
 * describe the same machine as the one saved (`memory` is the snapshot's RAM file, private).
 */
export async function restoreGuest(
  options: LaunchOptions,
  snapshot: VmSnapshotFiles,
  signal?: AbortSignal,
): Promise<Vm> {
  const backend = options.backend ?? new QemuBackend();
  const vm = await backend.restore(await guestConfig(options, backend), snapshot, signal);
  await recordVmProcess(options.instance, vm.pid);
  return vm;
}
