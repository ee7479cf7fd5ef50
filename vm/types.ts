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
  /** Resolves once with the agent channel connection (QEMU connects at startup). */
  readonly agent: Promise<Deno.Conn>;
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
}

/** Something that can start VMs. */
export interface VmBackend {
  /** Backend name for logs (`qemu`, `vz`). */
  readonly name: string;
  /** Kernel command line settings the backend's machine needs (VZ: `hvc0`, PCI). */
  readonly cmdline?: { console?: string; pci?: boolean };
  /** The device `mounts` are on, which the guest mounts them by (default `9p`; VZ: virtio-fs). */
  readonly mountTransport?: MountTransport;
  /**
   * The network transport the backend needs (`pair`: VZ's file-handle attachment); without it,
   * socket paths (`stream` or `dgram`, the caller's choice).
   */
  readonly netTransport?: "pair";
  /** Starts a VM; resolves once the VM process runs. */
  start(config: VmConfig): Promise<Vm>;
}
