/**
 * The guest kernel command line: words every guest gets, plus its machine's (`machine.ts`).
 *
 * @module
 */

import type { GuestArch } from "../host/mod.ts";
import { machineFor } from "./machine.ts";

/** Options of {@linkcode kernelCmdline}. */
export interface CmdlineOptions {
  /** The guest architecture (default: the host's); it decides the console and machine words. */
  arch?: GuestArch;
  /**
   * The host's TSC rate in kHz (x86_64 guests). Under TCG the guest's TSC runs at the host's
   * rate; telling the kernel skips its calibration, which hangs or goes wrong on a busy host.
   */
  tscKhz?: number;
  /**
   * Optional module groups the initramfs loads (`base` is always loaded, and the virtio
   * transport's group, `mmio` or `pci`, is added); all when absent.
   */
  moduleGroups?: readonly string[];
  /** Kernel messages on the console (default: quiet). */
  verbose?: boolean;
  /** Initramfs probe mode: print the probe marker and power off. */
  probe?: boolean;
  /** The console device (`hvc0` for a virtio console; default: the machine's, `ttyS0` on x86_64). */
  console?: string;
  /** Keep PCI probing (VZ's virtio devices are on PCI; microvm has none). @default false */
  pci?: boolean;
  /** Extra words appended as is. */
  extra?: readonly string[];
}

/** Returns the kernel command line for a shuru guest. */
export function kernelCmdline(options: CmdlineOptions = {}): string {
  const machine = machineFor(options.arch);
  const words = [
    `console=${options.console ?? machine.console}`,
    // Power off instead of hanging on a panic; QEMU runs with -no-reboot and exits.
    "panic=-1",
    options.verbose ? "loglevel=7" : "quiet",
    // Boot-time savers that matter under TCG: no crypto self-tests, no audit.
    "cryptomgr.notests",
    "audit=0",
    ...machine.cmdline({
      ...(options.tscKhz !== undefined ? { tscKhz: options.tscKhz } : {}),
      ...(options.pci ? { pci: true } : {}),
    }),
  ];
  if (options.moduleGroups) {
    // The virtio transport's driver first (the initramfs loads base and this one always).
    const transport = options.pci || machine.transport === "pci" ? "pci" : "mmio";
    const groups = options.moduleGroups.filter((g) => g !== "base" && g !== transport);
    words.push(`shuru.modules=${[transport, ...groups].join(",")}`);
  }
  if (options.probe) words.push("shuru.probe");
  words.push(...(options.extra ?? []));
  return words.join(" ");
}
