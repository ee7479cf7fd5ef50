/**
 * The initramfs: busybox, the kernel modules in load order, and an `/init` that mounts the
 * root disk and the tools disk (found by their virtio serial numbers), and hands over to the
 * tools disk's init, so the root filesystem needs nothing of shuru's.
 *
 * Kernel cmdline words it reads:
 * - `shuru.modules=mmio,9p,overlay,net`: optional module groups to load (default: all); one
 *   of `mmio` and `pci` is the virtio transport.
 * - `console=hvc0`: the console is a virtio console (Virtualization.framework), whose driver
 *   is a module: the script's output starts once it is loaded.
 * - `shuru.probe`: print {@linkcode PROBE_MARKER} and power off (the KVM probe boot).
 *
 * @module
 */

import { INITRAMFS_MARKER, PROBE_MARKER } from "../proto/mod.ts";
import { type CpioEntry, writeCpio } from "./cpio.ts";
import { type LoadableModule, MODULE_GROUPS, type ModuleGroup } from "./modules.ts";
import { findDisksShell, ROOT_DEVICE_FILE, TOOLS_INIT, TOOLS_MOUNT } from "./guest_paths.ts";

/** Created by the initramfs once it has mounted everything the guest needs. */
export const PREPARED_MARKER = "/run/shuru-prepared";
/**
 * shuru's Debian root filesystem keeps an init here for boots without shuru's initramfs (a
 * user's `--initrd` that mounts the root and runs `init=`): it mounts the tools disk itself.
 */
export const ROOTFS_INIT = "/sbin/shuru-init";

/** Modules of one group, in load order, excluding those an earlier group already loads. */
export interface GroupModules {
  /** The module group these modules make up (`9p`, `net`, ...). */
  group: ModuleGroup;
  /** Its modules in load order. */
  modules: LoadableModule[];
}

/**
 * Returns the `/init` script for the given module groups, built for kernel `release` (the
 * modules are skipped, with a line, when the running kernel is another one: a user's
 * `--kernel` must then have virtio-blk and ext4 built in).
 */
export function initScript(groups: readonly GroupModules[], release = ""): string {
  const loads = groups.map(({ group, modules }) => {
    const names = modules.map((m) => m.name).join(" ");
    if (group === "base") return `load ${names}`;
    return `want ${group} && load ${names}`;
  });
  return `#!/bin/busybox sh
# shuru initramfs: load modules, mount the root and tools disks, switch_root into ${TOOLS_INIT}.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
read -r up _ < /proc/uptime
cmdline=$($bb cat /proc/cmdline)
# A virtio console (console=hvc0, Virtualization.framework's) has its driver in a module: until
# it is loaded this script has no console, so the start line waits for it.
hvc=
for word in $cmdline; do
  case "$word" in console=hvc[0-9]*) hvc=\${word#console=} ;; esac
done
fail() {
  [ -n "$hvc" ] && [ -c /dev/$hvc ] && exec </dev/$hvc >/dev/$hvc 2>&1
  echo "${INITRAMFS_MARKER} error: $*"
  $bb poweroff -f
}
[ -n "$hvc" ] || echo "${INITRAMFS_MARKER} start $up"
case " $cmdline " in *" shuru.probe "*) echo "${PROBE_MARKER}"; $bb poweroff -f ;; esac
mods=all
for word in $cmdline; do
  case "$word" in shuru.modules=*) mods=",\${word#shuru.modules=}," ;; esac
done
want() { [ "$mods" = all ] || case "$mods" in *",$1,"*) true ;; *) false ;; esac; }
load() {
  for m in "$@"; do
    $bb insmod /lib/modules/$m.ko || fail "cannot load kernel module $m"
  done
}
if [ -z "${release}" ] || [ "$($bb uname -r)" = "${release}" ]; then
${loads.join("\n")}
else
  kernel_note="kernel $($bb uname -r) is not ${release}: its own drivers are used"
fi
if [ -n "$hvc" ]; then
  # devtmpfs makes the node once the driver found the device.
  n=0
  while [ ! -c /dev/$hvc ] && [ $n -lt 200 ]; do $bb usleep 10000; n=$((n + 1)); done
  [ -c /dev/$hvc ] || fail "no console /dev/$hvc (is it a virtio console?)"
  exec </dev/$hvc >/dev/$hvc 2>&1
  echo "${INITRAMFS_MARKER} start $up"
fi
[ -z "$kernel_note" ] || echo "${INITRAMFS_MARKER} $kernel_note"
# The root disk and the tools disk, told apart by their virtio serial numbers.
read -r up _ < /proc/uptime
deadline=$((\${up%.*} + 5))
root=
tools=
while :; do
${findDisksShell()}
  [ -n "$root" ] && [ -n "$tools" ] && break
  read -r up _ < /proc/uptime
  if [ "\${up%.*}" -ge $deadline ]; then
    missing=root
    [ -n "$root" ] && missing=tools
    fail "no $missing disk after 5 s (block devices: $($bb ls /sys/block | $bb tr '\\n' ' '))"
  fi
  $bb usleep 10000
done
$bb mkdir -p /newroot
# noinit_itable: no background zeroing of inode tables (writes on every boot after a grow).
$bb mount -t ext4 -o noatime,noinit_itable /dev/$root /newroot || fail "cannot mount /dev/$root as ext4"
# Mount points an image may lack (written to the run's copy-on-write layer, never the image).
for d in dev proc sys tmp run etc; do
  [ -d /newroot/$d ] || $bb mkdir -p /newroot/$d || fail "cannot make /$d in the root filesystem"
done
for fs in dev proc sys; do $bb mount --move /$fs /newroot/$fs; done
# Prepare the rest of the guest's mounts here: busybox is in RAM, while a root filesystem's
# mount (util-linux, several shared libraries) costs much more to start under TCG.
$bb mkdir -p /newroot/dev/pts /newroot/dev/shm
$bb mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
$bb mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/dev/shm
$bb mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp
$bb mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /newroot/run
$bb mkdir -p /newroot${TOOLS_MOUNT}
$bb mount -t ext4 -o ro,noatime /newroot/dev/$tools /newroot${TOOLS_MOUNT} || fail "cannot mount the tools disk /dev/$tools"
echo "$root" > /newroot${ROOT_DEVICE_FILE}
$bb ln -s /proc/self/fd /newroot/dev/fd
$bb ln -s /proc/self/fd/0 /newroot/dev/stdin
$bb ln -s /proc/self/fd/1 /newroot/dev/stdout
$bb ln -s /proc/self/fd/2 /newroot/dev/stderr
echo shuru > /newroot/proc/sys/kernel/hostname
# Loopback: guest servers on 127.0.0.1 (port forwards connect there) need it even without a NIC.
$bb ip link set lo up
# A NIC exists only with --allow-net / --expose-host; its other end is shuru's own stack, whose
# DHCP server answers at once. The lease's resolver goes to a tmpfs file bound over the root's
# /etc/resolv.conf, so the disk (and a saved checkpoint) keeps its own.
nic=
for dev in /newroot/sys/class/net/*; do
  case "\${dev##*/}" in lo|"*") ;; *) nic=\${dev##*/}; break ;; esac
done
if [ -n "$nic" ]; then
  $bb mkdir -p /newroot/run/shuru
  $bb cat > /bin/dhcp-event <<'DHCP'
#!/bin/busybox sh
bb=/bin/busybox
case "$1" in
  deconfig) $bb ip addr flush dev "$interface"; $bb ip link set "$interface" up ;;
  bound|renew)
    $bb ip addr flush dev "$interface"
    $bb ip addr add "$ip/\${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && $bb ip link set "$interface" mtu "$mtu"
    for r in $router; do $bb ip route replace default via "$r" dev "$interface"; break; done
    : > /newroot/run/shuru/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /newroot/run/shuru/resolv.conf; done
    ;;
esac
exit 0
DHCP
  $bb chmod 755 /bin/dhcp-event
  $bb udhcpc -i "$nic" -f -q -n -t 5 -T 1 -s /bin/dhcp-event >/dev/null 2>&1 ||
    echo "${INITRAMFS_MARKER} warning: no DHCP lease on $nic"
  if [ -s /newroot/run/shuru/resolv.conf ]; then
    [ -f /newroot/etc/resolv.conf ] || : > /newroot/etc/resolv.conf
    $bb mount --bind /newroot/run/shuru/resolv.conf /newroot/etc/resolv.conf
  fi
  read -r up _ < /newroot/proc/uptime
  echo "${INITRAMFS_MARKER} network $nic up $up"
fi
: > /newroot${PREPARED_MARKER}
read -r up _ < /newroot/proc/uptime
echo "${INITRAMFS_MARKER} root mounted $up"
exec $bb switch_root /newroot ${TOOLS_INIT}
`;
}

/**
 * Returns the initramfs entries (uncompressed) for `busybox` and the module groups, built for
 * kernel `release`.
 */
export function initramfsEntries(
  busybox: Uint8Array,
  groups: readonly GroupModules[],
  release = "",
): CpioEntry[] {
  const entries: CpioEntry[] = [
    { kind: "dir", path: "bin" },
    { kind: "dir", path: "dev" },
    { kind: "dir", path: "proc" },
    { kind: "dir", path: "sys" },
    { kind: "dir", path: "newroot" },
    { kind: "dir", path: "lib" },
    { kind: "dir", path: "lib/modules" },
    // The kernel opens /dev/console for /init's stdio before devtmpfs is mounted.
    { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
    { kind: "chardev", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    { kind: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
  ];
  for (const { modules } of groups) {
    for (const m of modules) {
      entries.push({ kind: "file", path: `lib/modules/${m.name}.ko`, data: m.data });
    }
  }
  entries.push({
    kind: "file",
    path: "init",
    data: new TextEncoder().encode(initScript(groups, release)),
    mode: 0o755,
  });
  return entries;
}

/** Returns the gzip-compressed newc archive of the initramfs. */
export async function buildInitramfs(
  busybox: Uint8Array,
  groups: readonly GroupModules[],
  release = "",
): Promise<Uint8Array> {
  const cpio = writeCpio(initramfsEntries(busybox, groups, release));
  const stream = new Blob([cpio]).stream().pipeThrough(new CompressionStream("gzip"));
  return await new Response(stream).bytes();
}

/** Splits resolved modules per group so each module is loaded once, by the first group. */
export function groupModules(
  resolved: ReadonlyMap<ModuleGroup, LoadableModule[]>,
): GroupModules[] {
  const seen = new Set<string>();
  const out: GroupModules[] = [];
  for (const group of Object.keys(MODULE_GROUPS) as ModuleGroup[]) {
    const modules = (resolved.get(group) ?? []).filter((m) => !seen.has(m.name));
    for (const m of modules) seen.add(m.name);
    out.push({ group, modules });
  }
  return out;
}
