import type { GuestRam } from "./guest_ram.ts";
import type { MachineDescription } from "./machine_description.ts";

/**
 * The VM interface the CLI and sandbox use. The QEMU backend implements it on Linux; a macOS
 * (Virtualization.framework) backend can implement it later without touching the callers.
 *
 * @module
 */

import type { GuestArch } from "../host/mod.ts";
import type { MountTransport } from "../proto/mod.ts";

/** How guest code is executed: Linux KVM, QEMU's TCG emulation, or macOS's Hypervisor.framework. */
export type Accel = "kvm" | "tcg" | "hvf";

/** The root disk: our NBD server's export, or an image file (tests, debugging). */
export type DiskConfig =
  | { kind: "nbd"; socket: string; exportName: string; readOnly?: boolean }
  | { kind: "file"; path: string; format?: "raw" | "qcow2"; readOnly?: boolean };

/** A host folder shared with the guest (virtio-9p on QEMU, virtio-fs on VZ). */
export interface MountConfig {
  /** Tag the guest mounts by (`mount -t 9p TAG ...`): letters, digits, `_`, `-`, `.`. */
  tag: string;
  /** Absolute host folder. */
  hostPath: string;
  /** `true` to refuse guest writes at the device. */
  readOnly: boolean;
}

/** A network device whose frames go to a Unix socket of ours. */
export interface NetConfig {
  /**
   * How frames travel: `stream` (default), QEMU connects to `socket` and sends each frame as a
   * 4-byte big-endian length then the frame; `dgram`, one frame per datagram between QEMU's
   * `vmSocket` and our `socket`; `pair`, one frame per datagram over a socket pair whose VM end
   * is `fd` (macOS's framework takes the NIC's host end as a file handle).
   */
  transport?: "stream" | "dgram" | "pair";
  /** Our socket's path (`stream`, `dgram`). */
  socket?: string;
  /** `dgram`: the path QEMU binds for its end. */
  vmSocket?: string;
  /**
   * `pair`: the VM's end of the socket pair. The VM borrows it; the network that made it
   * closes it, after the VM has exited.
   */
  fd?: number;
  /** MAC address `xx:xx:xx:xx:xx:xx` (default: QEMU's). */
  mac?: string;
  /** MTU the guest sees (`host_mtu`). */
  mtu?: number;
}

/**
 * Where guest RAM lives. Absent: anonymous memory (the default, as before snapshots).
 * - `shared: true`: the file *is* the guest's RAM (`MAP_SHARED`); what the guest writes lands in
 *   it. A VM booted this way can save a snapshot whose RAM image is this file, with no copy.
 * - `shared: false`: the file is mapped copy-on-write (`MAP_PRIVATE`): the guest starts with its
 *   bytes and its writes stay private to this VM, so several VMs can map one file.
 *
 * The file must be exactly `memoryMiB` MiB (QEMU refuses another size; a missing file is created
 * sparse).
 */
export interface MemoryFile {
  /** Absolute path of the RAM file. */
  path: string;
  /** `true`: map shared (the file is the RAM); `false`: map private (copy-on-write). */
  shared: boolean;
}

/** Everything needed to start one VM. */
export interface VmConfig {
  /** The guest architecture (default: the host's); picks the machine (`machine.ts`). */
  arch?: GuestArch;
  /** The kernel: an uncompressed ELF (x86_64) or an `Image` (arm64). */
  kernel: string;
  /** Initramfs image. */
  initrd: string;
  /** Kernel command line (see `kernelCmdline`). */
  cmdline: string;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Execution engine (resolve `auto` with `resolveAccel` first). */
  accel: Accel;
  /** Root disk (virtio serial `shuru-root`); none for the KVM probe boot. */
  disk?: DiskConfig;
  /**
   * The tools disk: a read-only raw ext4 image file (virtio serial `shuru-tools`) holding the
   * agent and everything it runs on; shuru's initramfs mounts it. Shared by every VM.
   */
  tools?: string;
  /** Socket path the backend listens on for the agent channel (virtio-serial `shuru.agent`). */
  agentSocket: string;
  /** Host folders. */
  mounts?: MountConfig[];
  /** Network device; none when absent. */
  net?: NetConfig;
  /** File receiving the serial console (always written, for diagnosis). */
  consoleLog: string;
  /** `true`: the serial console is the user's terminal (`shuru run --console`). */
  interactiveConsole?: boolean;
  /** Guest RAM in a file (snapshots); anonymous memory when absent. */
  memory?: MemoryFile;
  /**
   * Socket path the backend listens on for the VM monitor (QMP on QEMU), which pause, resume and
   * snapshots need. Absent: no monitor, and those calls fail.
   */
  controlSocket?: string;
  /**
   * VM generation ID (a UUID) exposed to the guest (`-device vmgenid` on QEMU); a guest kernel
   * with the vmgenid driver reseeds its RNG when it changes. Absent: no such device.
   */
  vmGenerationId?: string;
}

/** How a VM ended. */
export interface VmExit {
  /** QEMU's exit status (0 after a guest power-off). */
  code: number;
  /** Signal that ended QEMU, if any. */
  signal: string | null;
  /** `true` when the guest powered itself off (rather than being stopped or crashing). */
  poweredOff: boolean;
  /** The kernel's panic line when the guest panicked (it then resets and QEMU exits), else "". */
  panic: string;
  /** Last lines of the serial console, for error messages. */
  consoleTail: string;
  /** QEMU's own error output (trimmed). */
  stderr: string;
}

/** Names of boot phases, in the order they happen. */
export type BootPhase =
  | "spawned"
  | "qemuReady"
  | "kernel"
  | "initramfs"
  | "rootMounted"
  | "agentStart"
  | "exited";

/** A running VM. */
export interface Vm extends AsyncDisposable {
  /** Process id of the VM process (QEMU), for instance records. */
  readonly pid: number;
  /** One line naming how the VM process is confined on the host (for `shuru run -v`). */
  readonly confinement?: string;
  /** Resolves once with the first agent channel connection (made when the VM starts). */
  readonly agent: Promise<Deno.Conn>;
  /**
   * Opens a new agent channel connection after the previous one was closed (needs a
   * `controlSocket`). The guest sees its port close when the host hangs up and reopen here.
   */
  connectAgent(): Promise<Deno.Conn>;
  /** Resolves when the VM has ended, however it ended. Never rejects. */
  readonly exited: Promise<VmExit>;
  /**
   * Milliseconds since the VM was started at which each phase was seen on the console
   * (`kernel` is derived from the guest's uptime at the first marker).
   */
  readonly phases: Partial<Record<BootPhase, number>>;
  /** Resolves when the console shows `phase` (rejects if the VM ends first). */
  waitFor(phase: BootPhase): Promise<number>;
  /** Asks the VM to stop (SIGTERM: QEMU flushes its disks), then kills after `graceMs`. */
  stop(graceMs?: number): Promise<VmExit>;
  /** Kills the VM at once. */
  kill(): void;
  /** The last `lines` lines of the serial console. */
  consoleTail(lines?: number): string;
  /**
   * Stops the virtual CPUs. Resolves once the guest's block requests in flight have completed
   * and been flushed to the disk's server, so the disk and RAM describe the same instant.
   */
  pause(signal?: AbortSignal): Promise<void>;
  /** Runs the virtual CPUs again (after {@linkcode pause} or {@linkcode VmBackend.restore}). */
  resume(signal?: AbortSignal): Promise<void>;
  /**
   * Writes the machine state (CPUs and devices, never the RAM) of the paused VM to
   * `stateFile`, in milliseconds; the VM stays paused. With the RAM (see {@linkcode openRam})
   * and the disk as they are at this pause, it is everything a restore needs.
   */
  saveState(stateFile: string, options?: SaveStateOptions): Promise<SaveStateResult>;
  /**
   * The machine this VM is, as a snapshot records it (compare with `machineMismatch` before a
   * restore). Needs the monitor (`controlSocket`).
   */
  describe(): MachineDescription;
  /**
   * The paused VM's RAM, for saving it (needs `memory`). Read it before resuming: the guest
   * changes it as soon as it runs.
   */
  openRam(): Promise<GuestRam>;
}

/** Options of {@linkcode Vm.saveState}. */
export interface SaveStateOptions {
  /** Gives up (the state file is then incomplete and removed). */
  signal?: AbortSignal;
}

/** What {@linkcode Vm.saveState} wrote. */
export interface SaveStateResult {
  /** Size of the state file in bytes. */
  stateBytes: number;
  /** Milliseconds the save took. */
  elapsedMs: number;
}

/** A saved VM: the RAM image and the machine state that go together. */
export interface VmSnapshotFiles {
  /** The RAM file (exactly `memoryMiB` MiB); the restored VM maps it private (copy-on-write). */
  ramFile: string;
  /** The machine state written by {@linkcode Vm.saveState} at the same pause as the RAM. */
  stateFile: string;
  /**
   * The machine the state belongs to (`vm.describe()` of the saved VM, as stored). When given,
   * a restore into another machine fails before the state is loaded: QEMU itself does not
   * notice every difference (a one-CPU state loads into a two-CPU machine).
   */
  machine?: Record<string, unknown>;
}

/** Something that can start VMs. */
export interface VmBackend {
  /** Backend name for logs (`qemu`, `vz`). */
  readonly name: string;
  /** Kernel command line settings the backend's machine needs (VZ: `hvc0`, PCI). */
  readonly cmdline?: { console?: string; pci?: boolean };
  /** `true` when {@linkcode VmBackend.restore} and the snapshot calls of its VMs work. */
  readonly memorySnapshots: boolean;
  /** The device `mounts` are on, which the guest mounts them by (default `9p`; VZ: virtio-fs). */
  readonly mountTransport?: MountTransport;
  /**
   * The network transport the backend needs (`pair`: VZ's file-handle attachment); without it,
   * socket paths (`stream` or `dgram`, the caller's choice).
   */
  readonly netTransport?: "pair";
  /** Starts a VM; resolves once the VM process runs. */
  start(config: VmConfig): Promise<Vm>;
  /**
   * Starts a VM from a snapshot and leaves it paused with the state loaded; call
   * {@linkcode Vm.resume} to run it. `config` must describe the same machine as the one saved
   * (CPUs, memory, devices, kernel and command line); its `memory` is replaced by the
   * snapshot's RAM file, mapped private, so any number of VMs can restore from the same files.
   * The disk must hold what it held when the snapshot was taken.
   */
  restore(config: VmConfig, snapshot: VmSnapshotFiles, signal?: AbortSignal): Promise<Vm>;
}
