/**
 * Virtual machines: the {@linkcode Vm}/{@linkcode VmBackend} interface, the QEMU `microvm`
 * backend, accelerator choice (KVM/TCG), kernel command line, host TSC rate and instance
 * folders.
 *
 * A run looks like:
 * ```ts
 * const instance = await createInstance(layout.instances);
 * const { accel, notice } = await resolveAccel("auto", { kernel, initrd, cacheFile, workDir });
 * const vm = await new QemuBackend().start({
 *   kernel, initrd, accel, cpus: 2, memoryMiB: 2048,
 *   cmdline: kernelCmdline({ tscKhz: (await hostTscRate())?.khz }),
 *   disk: { kind: "nbd", socket: instance.nbdSocket, exportName: "root" },
 *   agentSocket: instance.agentSocket, consoleLog: instance.consoleLog,
 * });
 * await recordVmProcess(instance, vm.pid);
 * const conn = await vm.agent; // speak the agent protocol; the agent exiting powers off
 * const exit = await vm.exited;
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
export { AGENT_PORT_NAME, qemuArgs } from "./qemu_args.ts";
export { type CmdlineOptions, kernelCmdline } from "./cmdline.ts";
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
  isAlive,
  type ProcessId,
  processId,
  pruneInstances,
  type PruneResult,
  recordVmProcess,
  removeInstance,
} from "./instance.ts";
