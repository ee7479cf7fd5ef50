/**
 * Paths and names the guest's boot steps share: the initramfs finds the disks by these serial
 * numbers and mounts the tools disk where its scripts expect it.
 *
 * @module
 */

/** Where the initramfs mounts the tools disk in the guest (on the `/run` tmpfs). */
export const TOOLS_MOUNT = "/run/shuru/tools";
/** The init `switch_root` starts (on the tools disk). */
export const TOOLS_INIT = `${TOOLS_MOUNT}/init`;
/** The virtio-blk serial number of the tools disk. */
export const TOOLS_SERIAL = "shuru-tools";
/** The virtio-blk serial number of the root disk. */
export const ROOT_SERIAL = "shuru-root";
/** A file the initramfs writes with the root disk's name (`vda`), for the init. */
export const ROOT_DEVICE_FILE = "/run/shuru/root-device";
