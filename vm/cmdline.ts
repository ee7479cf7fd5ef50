/**
 * The guest kernel command line.
 *
 * @module
 */

/** Options of {@linkcode kernelCmdline}. */
export interface CmdlineOptions {
  /**
   * The host's TSC rate in kHz. Under TCG the guest's TSC runs at the host's rate; telling the
   * kernel skips its calibration, which hangs or goes wrong on a busy host.
   */
  tscKhz?: number;
  /** Optional module groups the initramfs loads (`base` is always loaded); all when absent. */
  moduleGroups?: readonly string[];
  /** Kernel messages on the console (default: quiet). */
  verbose?: boolean;
  /** Initramfs probe mode: print the probe marker and power off. */
  probe?: boolean;
  /** The console device (`hvc0` for a virtio console). @default "ttyS0" */
  console?: string;
  /** Keep PCI probing (VZ's virtio devices are on PCI; microvm has none). @default false */
  pci?: boolean;
  /** Extra words appended as is. */
  extra?: readonly string[];
}

/** Returns the kernel command line for a shuru guest. */
export function kernelCmdline(options: CmdlineOptions = {}): string {
  const words = [
    `console=${options.console ?? "ttyS0"}`,
    // Power off instead of hanging on a panic; QEMU runs with -no-reboot and exits.
    "panic=-1",
    options.verbose ? "loglevel=7" : "quiet",
    // Boot-time savers that matter under TCG: no crypto self-tests, no clocksource watchdog
    // (the TSC rate is given), no PCI probing (microvm has no PCI), no audit.
    "cryptomgr.notests",
    "tsc=reliable",
    "no_timer_check",
    ...(options.pci ? [] : ["pci=off"]),
    "audit=0",
    "random.trust_cpu=on",
  ];
  if (options.tscKhz !== undefined) {
    if (!Number.isInteger(options.tscKhz) || options.tscKhz <= 0) {
      throw new RangeError(`tscKhz must be a positive integer, got ${options.tscKhz}`);
    }
    words.push(`tsc_early_khz=${options.tscKhz}`);
  }
  if (options.moduleGroups) {
    const groups = options.moduleGroups.filter((g) => g !== "base");
    words.push(`shuru.modules=${groups.length ? groups.join(",") : "none"}`);
  }
  if (options.probe) words.push("shuru.probe");
  words.push(...(options.extra ?? []));
  return words.join(" ");
}
