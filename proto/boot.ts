/**
 * What a booting guest and the host agree on: the lines the guest prints on its serial console
 * (the initramfs and the tools disk's init, written by assets/, print them; the VM backend, vm/,
 * scans the console for them to time the boot phases and to read the KVM probe's answer), and
 * the virtio-blk serial numbers by which the initramfs tells the disks the backend attaches apart.
 *
 * @module
 */

/** Printed on the console by the initramfs in probe mode (`shuru.probe` on the cmdline). */
export const PROBE_MARKER = "shuru-probe-ok";
/**
 * Starts every line the initramfs prints: `start UPTIME`, `network NIC up UPTIME`,
 * `root mounted UPTIME`, `warning: ...`, `error: ...` (uptimes in seconds).
 */
export const INITRAMFS_MARKER = "shuru-initramfs:";
/** Printed by the guest's init right before it starts the agent (then the uptime). */
export const AGENT_START_MARKER = "shuru-init: agent start";
/**
 * Printed on a line of its own by whatever powers the guest off (the agent, the tools disk's
 * agent runner), after the disks are synced, right before the power-off. The kernel's own
 * `reboot: Power down` comes after its devices are shut down, which on a virtio console (`hvc0`,
 * Virtualization.framework's) is too late to reach the host: since 6.1.x stable kernels reset
 * virtio devices at shutdown.
 */
export const POWER_OFF_MARKER = "shuru-guest: powering off, disks synced";

/** The virtio-blk serial number of the root disk. */
export const ROOT_SERIAL = "shuru-root";
/** The virtio-blk serial number of the tools disk (read-only: the agent and what it runs on). */
export const TOOLS_SERIAL = "shuru-tools";
