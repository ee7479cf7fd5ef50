/**
 * Virtual machines: the {@linkcode Vm}/{@linkcode VmBackend} interface, the QEMU backend with one
 * machine per guest architecture (`microvm` for x86_64, `virt` for arm64; `machine.ts`) and its
 * monitor ({@linkcode QmpClient}), memory snapshots (pause, machine state, guest RAM, restore:
 * `docs/snapshots.md`; the description a snapshot belongs to: `machine_description.ts`), the
 * Virtualization.framework backend on macOS (`vz*.ts`, docs/macos.md), accelerator choice
 * (KVM/HVF/TCG), kernel command line, host TSC rate and instance folders.
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
  MemoryFile,
  MountConfig,
  NetConfig,
  SaveStateOptions,
  SaveStateResult,
  Vm,
  VmBackend,
  VmConfig,
  VmExit,
  VmSnapshotFiles,
} from "./types.ts";
export { VmError, type VmErrorCode } from "./errors.ts";
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
export {
  captureChangedRam,
  type CaptureOptions,
  type GuestRam,
  openGuestRam,
  type OpenGuestRamOptions,
  PAGE_SIZE,
  type RamCapture,
  writeRamFile,
} from "./guest_ram.ts";
export { QemuBackend, type QemuBackendOptions, QemuVm } from "./qemu.ts";
export {
  loadMachineState,
  type MachineStateOptions,
  MIGRATION_CAPABILITIES,
  saveDeviceState,
} from "./migration.ts";
export {
  guestCmdline,
  guestConfig,
  launchGuest,
  type LaunchOptions,
  restoreGuest,
} from "./launch.ts";
export { AGENT_PORT_NAME, qemuArgs, RAM_BACKEND_ID } from "./qemu_args.ts";
export {
  describeMachine,
  MACHINE_FORMAT,
  type MachineDescription,
  machineMismatch,
  modulesOf,
} from "./machine_description.ts";
export {
  QmpClient,
  type QmpConnectOptions,
  QmpError,
  type QmpErrorCode,
  type QmpEvent,
  type QmpExecuteOptions,
  type QmpVersion,
} from "./qmp.ts";
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
