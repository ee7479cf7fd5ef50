/**
 * Virtual machines: the {@linkcode Vm}/{@linkcode VmBackend} interface, the QEMU backend with one
 * machine description per guest architecture (`microvm` for x86_64, `virt` for arm64;
 * `machine.ts`), the Virtualization.framework backend on macOS (`vz*.ts`, docs/macos.md),
 * accelerator choice (KVM/HVF/TCG), kernel command line, host TSC rate and instance folders.
 *
 * A run looks like this (it boots a VM, so `deno test --doc` does not run it):
 * ```ts ignore
 * import { join } from "node:path";
 * import { ensureAssets } from "../assets/mod.ts";
 * import { homeLayout } from "../host/mod.ts";
 * import { createInstance, launchGuest, removeInstance, resolveAccel } from "./mod.ts";
 * const layout = homeLayout();
 * const assets = await ensureAssets({ assetsDir: layout.assets });
 * const { accel, notice } = await resolveAccel("auto", {
 *   kernel: assets.kernel, initrd: assets.initramfs, workDir: layout.assets,
 *   cacheFile: join(layout.assets, "kvm-probe.json"),
 * });
 * const instance = await createInstance(layout.instances);
 * // ... start the NBD server on instance.nbdSocket (export size >= assets.rootfsBytes)
 * const vm = await launchGuest({
 *   assets, instance, accel, cpus: 2, memoryMiB: 2048,
 *   disk: { kind: "nbd", socket: instance.nbdSocket, exportName: "root" },
 * });
 * const conn = await vm.agent; // the agent protocol; the agent exiting powers the guest off
 * const exit = await vm.exited; // or vm.stop() on Ctrl-C
 * await removeInstance(instance);
 * ```
 *
 * @module
 */

export type {
  Accel,
  BootPhase,
  DiskConfig,
  MountConfig,
  NetConfig,
  Vm,
  VmBackend,
  VmConfig,
  VmExit,
} from "./types.ts";
export { VmError, type VmErrorCode } from "./errors.ts";
export { QemuBackend, type QemuBackendOptions } from "./qemu.ts";
export {
  type BackendName,
  createBackend,
  type CreateBackendOptions,
  defaultBackend,
  parseBackend,
} from "./backend.ts";
export { VzBackend, type VzBackendOptions, VzVm } from "./vz.ts";
export {
  ensureSignedDeno,
  ENTITLEMENTS_PLIST,
  signedDenoPath,
  type SignOptions,
  type SignResult,
  VZ_ENTITLEMENT,
} from "./vz_sign.ts";
export { BootConsole, type BootConsoleOptions } from "./console.ts";
export {
  confineCommand,
  type ConfinedCommand,
  type ConfineOptions,
  confineQemu,
  type NetnsMode,
  QEMU_SANDBOX_ARGS,
} from "./confine.ts";
export { guestCmdline, launchGuest, type LaunchOptions } from "./launch.ts";
export { AGENT_PORT_NAME, qemuArgs } from "./qemu_args.ts";
export { type CmdlineOptions, kernelCmdline } from "./cmdline.ts";
export {
  ARM64_TCG_CPU,
  deviceModel,
  type Machine,
  machineFor,
  MACHINES,
  type VirtioDevice,
  type VirtioTransport,
} from "./machine.ts";
export { hostTscRate, type TscRate } from "./tsc.ts";
export {
  type AccelChoice,
  type AccelDecision,
  parseAccel,
  probeKvm,
  resolveAccel,
  type ResolveAccelOptions,
} from "./accel.ts";
export {
  createInstance,
  type CreateInstanceOptions,
  type Instance,
  pruneInstances,
  type PruneResult,
  recordVmProcess,
  removeInstance,
} from "./instance.ts";
