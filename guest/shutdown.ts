/**
 * Powering the guest off: sync every filesystem (so the NBD-backed disk has all data before the
 * host saves a checkpoint), then reboot(RB_POWER_OFF) through FFI.
 *
 * In the VM, PID 1 is `tini` running the agent. reboot(2) needs only CAP_SYS_BOOT, not PID 1, so
 * the agent powers off directly: no init script, no busybox `poweroff`. The kernel stops at once;
 * processes are not signalled first, which is fine for a throwaway sandbox whose disk is synced.
 *
 * @module
 */

import { libc } from "../ffi/mod.ts";
import { POWER_OFF_MARKER } from "../proto/mod.ts";

/** Flushes all filesystems (`sync(2)`). */
export function syncAll(): void {
  libc.sync();
}

/**
 * Syncs, announces the power-off on the console (`console`: the agent's stderr, which is the
 * console), then powers the machine off. Only call this in the VM: on a host it powers the host
 * off.
 *
 * @throws LibcError when the kernel refuses (not root / no CAP_SYS_BOOT).
 */
export function powerOffGuest(console: (line: string) => void): never {
  libc.sync();
  console(POWER_OFF_MARKER);
  libc.powerOff();
}
