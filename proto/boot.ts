/**
 * The lines a booting guest prints on its serial console for the host: the initramfs and the
 * root filesystem's init (written by assets/) print them, the VM backend (vm/) scans the console
 * for them to time the boot phases and to read the KVM probe's answer.
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
/** Printed by the root filesystem's init right before it starts the agent (then the uptime). */
export const AGENT_START_MARKER = "shuru-init: agent start";
