/**
 * Paths the guest's boot steps share: the initramfs mounts the tools disk where its scripts
 * expect it, and finds the disks by the serial numbers of proto/boot.ts.
 *
 * @module
 */

import { ROOT_SERIAL, TOOLS_SERIAL } from "../proto/mod.ts";

/** Where the initramfs mounts the tools disk in the guest (on the `/run` tmpfs). */
export const TOOLS_MOUNT = "/run/shuru/tools";
/** The init `switch_root` starts (on the tools disk). */
export const TOOLS_INIT = `${TOOLS_MOUNT}/init`;
/**
 * Shell lines (busybox or dash) that set `$root` and `$tools` to the names (`vda`) of the disks
 * with those serial numbers; a disk without one is the root (a user's own setup may set none).
 */
export function findDisksShell(): string {
  return `for dev in /sys/block/vd*; do
  [ -e "$dev" ] || continue
  serial=
  [ -r "$dev/serial" ] && read -r serial < "$dev/serial"
  case "$serial" in
    ${TOOLS_SERIAL}) tools=\${dev##*/} ;;
    ${ROOT_SERIAL}|"") [ -n "$root" ] || root=\${dev##*/} ;;
  esac
done`;
}

/** A file the initramfs writes with the root disk's name (`vda`), for the init. */
export const ROOT_DEVICE_FILE = "/run/shuru/root-device";
