/**
 * The QEMU machine of each guest architecture: everything that differs between an x86_64 and an
 * arm64 guest on the QEMU side is in this one table (program, machine type, CPU model per
 * accelerator, serial console, kernel command line words, virtio device names, which
 * accelerator runs it natively). The rest of `vm/` is the same for every architecture: the same
 * devices (NBD root on virtio-blk, the agent's virtio-serial port, 9p, virtio-net), the same
 * console markers.
 *
 * - x86_64: `microvm` (no PCI, no firmware; virtio-mmio devices described in ACPI), the kernel ELF
 *   booted through its PVH entry.
 * - arm64: `virt` (devices described in the device tree QEMU generates), the `Image` booted
 *   directly; console on the PL011 UART (`ttyAMA0`). Under TCG the CPU model matters: `-cpu max`
 *   emulates pointer authentication with the architected QARMA cipher, which made a boot to the
 *   initramfs about 5 times slower than a named core (docs/guest_image.md, "arm64").
 *
 * @module
 */

import { type GuestArch, hostArch, qemuSystemTool } from "../host/mod.ts";
import type { Accel } from "./types.ts";

/** How virtio devices reach the guest: memory-mapped (no PCI) or on a PCI bus. */
export type VirtioTransport = "mmio" | "pci";

/** A virtio device kind shuru attaches. */
export type VirtioDevice = "blk" | "serial" | "9p" | "net";

/** How QEMU runs guests of one architecture. */
export interface Machine {
  /** The guest architecture. */
  arch: GuestArch;
  /** QEMU system emulator (found in PATH and the sbin folders). */
  qemu: string;
  /** Its Debian package, for the install hint. */
  qemuPackage: string;
  /** The `-M` value. */
  machine: string;
  /** The `-cpu` value under `accel`. */
  cpu(accel: Accel): string;
  /** The guest's serial console device (`console=`). */
  console: string;
  /**
   * Kernel command line words this machine needs besides the common ones (`pci`: the devices
   * are on PCI, so probing stays on: macOS's framework).
   */
  cmdline(options: { tscKhz?: number; pci?: boolean }): string[];
  /** How virtio devices are attached. */
  transport: VirtioTransport;
  /** The accelerator that runs this architecture natively on a host, or none (TCG only). */
  nativeAccel(host: { os: string; arch: string }): Exclude<Accel, "tcg"> | undefined;
}

/** virtio device model names per transport. */
const DEVICE_MODELS: Record<VirtioTransport, Record<VirtioDevice, string>> = {
  mmio: {
    blk: "virtio-blk-device",
    serial: "virtio-serial-device",
    "9p": "virtio-9p-device",
    net: "virtio-net-device",
  },
  pci: {
    blk: "virtio-blk-pci",
    serial: "virtio-serial-pci",
    "9p": "virtio-9p-pci",
    net: "virtio-net-pci",
  },
};

/** The QEMU device model of `kind` on `machine`. */
export function deviceModel(machine: Machine, kind: VirtioDevice): string {
  return DEVICE_MODELS[machine.transport][kind];
}

/** The table. */
export const MACHINES: Readonly<Record<GuestArch, Machine>> = {
  x86_64: {
    arch: "x86_64",
    qemu: qemuSystemTool("x86_64").command,
    qemuPackage: qemuSystemTool("x86_64").package,
    machine: "microvm,acpi=on,pit=on",
    // TCG: every feature QEMU can emulate. KVM/HVF: the host CPU as is.
    cpu: (accel) => (accel === "tcg" ? "max" : "host"),
    console: "ttyS0",
    cmdline: ({ tscKhz, pci }) => {
      // The guest's TSC runs at the host's rate; the kernel is told so and skips calibrating it
      // (which hangs or goes wrong on a busy host), and its clocksource watchdog. No PCI on
      // microvm.
      const words = [
        "tsc=reliable",
        "no_timer_check",
        ...(pci ? [] : ["pci=off"]),
        "random.trust_cpu=on",
      ];
      if (tscKhz !== undefined) {
        if (!Number.isInteger(tscKhz) || tscKhz <= 0) {
          throw new RangeError(`tscKhz must be a positive integer, got ${tscKhz}`);
        }
        words.push(`tsc_early_khz=${tscKhz}`);
      }
      return words;
    },
    transport: "mmio",
    nativeAccel: (host) =>
      host.arch !== "x86_64" ? undefined : host.os === "darwin" ? "hvf" : "kvm",
  },
  arm64: {
    arch: "arm64",
    qemu: qemuSystemTool("arm64").command,
    qemuPackage: qemuSystemTool("arm64").package,
    // The best interrupt controller the accelerator offers (GICv3 beyond 8 vCPUs).
    machine: "virt,gic-version=max",
    cpu: (accel) => (accel === "tcg" ? ARM64_TCG_CPU : "host"),
    console: "ttyAMA0",
    cmdline: () => [],
    transport: "mmio",
    nativeAccel: (host) =>
      host.arch !== "aarch64" ? undefined : host.os === "darwin" ? "hvf" : "kvm",
  },
};

/** The arm64 CPU model under TCG (see the module doc and docs/guest_image.md). */
export const ARM64_TCG_CPU = "max,pauth=off";

/** The machine of `arch` (default: the host's architecture). */
export function machineFor(arch: GuestArch = hostArch()): Machine {
  return MACHINES[arch];
}
