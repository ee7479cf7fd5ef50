/**
 * The root filesystem image: a Debian base made by mmdebstrap (cached as a tarball keyed by
 * its recipe), plus a fallback init and a `deno` link, written into an ext4 image with
 * `mkfs.ext4 -d` (no mounting, no loop devices). The agent and Deno are on the tools disk.
 *
 * @module
 */

import { join } from "node:path";
import type { AsRoot } from "./as_root.ts";
import { runTool } from "./run.ts";
import { TOOLS_SERIAL } from "../proto/mod.ts";
import { PREPARED_MARKER, ROOTFS_INIT } from "./initramfs.ts";
import { findDisksShell, ROOT_DEVICE_FILE, TOOLS_INIT, TOOLS_MOUNT } from "./guest_paths.ts";

/** What goes into the Debian base. Changing it changes the tarball's cache key. */
export interface DebianRecipe {
  /** Debian suite. */
  suite: string;
  /** mmdebstrap variant. */
  variant: string;
  /** Packages on top of the variant. */
  packages: readonly string[];
  /** dpkg path filters (documentation and locales are left out of the image). */
  dpkgOptions: readonly string[];
}

/** The recipe of the base image. */
export const DEBIAN_RECIPE: DebianRecipe = {
  suite: "bookworm",
  variant: "minbase",
  packages: [
    "ca-certificates",
    "python3",
    "curl",
    "git",
    "procps",
    "iproute2",
    "tini",
    "e2fsprogs",
  ],
  dpkgOptions: [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
  ],
};

/** `deno` in shuru's Debian guest: a link to the tools disk's (the guest has its libc). */
export const GUEST_DENO_PATH = "/usr/local/bin/deno";

/** Arguments of mmdebstrap for `recipe`, writing a tarball to `outTar`. */
export function mmdebstrapArgs(recipe: DebianRecipe, outTar: string): string[] {
  return [
    "--format=tar",
    `--variant=${recipe.variant}`,
    `--include=${recipe.packages.join(",")}`,
    ...recipe.dpkgOptions.map((o) => `--dpkgopt=${o}`),
    '--aptopt=Acquire::Languages "none"',
    recipe.suite,
    outTar,
  ];
}

/**
 * `/sbin/shuru-init` of shuru's Debian image, for boots without shuru's initramfs (a user's
 * `--initrd` that mounts the root disk and runs `init=/sbin/shuru-init`): mounts what shuru's
 * initramfs would, finds the tools disk by its serial number, mounts it and runs its init.
 * shuru's own initramfs starts the tools disk's init directly.
 */
export function guestInitScript(): string {
  return `#!/bin/sh
# shuru guest init for boots without shuru's initramfs: mount the tools disk, run its init.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
read -r up _ < /proc/uptime 2>/dev/null || up=?
echo "shuru-init: start without shuru's initramfs $up"
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
echo shuru > /proc/sys/kernel/hostname
ip link set lo up 2>/dev/null
mount -o remount,rw / 2>/dev/null
root=
tools=
${findDisksShell()}
if [ -z "$tools" ]; then
  echo "shuru-init: error: no tools disk (serial ${TOOLS_SERIAL})"
  echo o > /proc/sysrq-trigger
fi
mkdir -p ${TOOLS_MOUNT}
mount -t ext4 -o ro /dev/$tools ${TOOLS_MOUNT}
echo "$root" > ${ROOT_DEVICE_FILE}
: > ${PREPARED_MARKER}
exec ${TOOLS_INIT}
`;
}

/**
 * Writes shuru's few files into the unpacked Debian tree at `root`: the fallback init, a
 * `deno` link to the tools disk's, the host name. The agent and Deno themselves are on the tools
 * disk (`tools.ts`), so an agent change does not change this image.
 */
export async function addShuruFiles(root: string): Promise<void> {
  const write = async (path: string, data: string | Uint8Array, mode: number) => {
    const full = join(root, path);
    await Deno.mkdir(join(full, ".."), { recursive: true });
    if (typeof data === "string") await Deno.writeTextFile(full, data);
    else await Deno.writeFile(full, data);
    await Deno.chmod(full, mode);
  };
  await Deno.mkdir(join(root, "usr/local/bin"), { recursive: true });
  await Deno.symlink(`${TOOLS_MOUNT}/bin/deno`, join(root, GUEST_DENO_PATH));
  await write(ROOTFS_INIT, guestInitScript(), 0o755);
  await write("etc/hostname", "shuru\n", 0o644);
  await write("etc/hosts", "127.0.0.1\tlocalhost shuru\n::1\tlocalhost ip6-localhost\n", 0o644);
}

/**
 * Total size in bytes of the files under `dir` (apparent sizes), via `du` (as `asRoot` when
 * given: a tree unpacked in a user namespace has folders only its root may read).
 */
export async function treeBytes(dir: string, asRoot?: AsRoot): Promise<number> {
  const out = new TextDecoder().decode(
    await (asRoot ? asRoot.run("du", ["-sb", dir]) : runTool("du", ["-sb", dir])),
  );
  return Number(out.split(/\s/)[0]);
}

/**
 * The filesystem size of the default disk (`shuru run --disk-size` default, 4096 MiB). The
 * image is sparse, so its unused space costs nothing on disk, and a run at the default size
 * does not have to grow the filesystem at boot (seconds under TCG).
 */
export const DEFAULT_FS_BYTES = 4096 * 1024 * 1024;

/**
 * Image size for `contentBytes` of files: at least 15% + 96 MiB headroom, and at least
 * `minBytes`; whole MiB.
 */
export function imageBytesFor(contentBytes: number, minBytes = DEFAULT_FS_BYTES): number {
  const mib = 1024 * 1024;
  const needed = Math.ceil((contentBytes * 1.15 + 96 * mib) / mib) * mib;
  return Math.max(needed, Math.ceil(minBytes / mib) * mib);
}

/**
 * mkfs.ext4 options: a label, 4 KiB blocks and the default inode ratio even for small images
 * (the filesystem grows to GiBs in the guest), no blocks reserved for root.
 */
export const MKFS_OPTIONS: readonly string[] = ["-L", "shuru-root", "-T", "default", "-m", "0"];

/**
 * Makes `image` (size `options.bytes`) an ext4 filesystem holding the tree at `root`, with the
 * owners `mkfs.ext4` sees as `options.root` (the real root, or a user namespace's).
 */
export async function makeExt4(
  root: string,
  image: string,
  options: { bytes: number; root: AsRoot },
): Promise<void> {
  const { bytes } = options;
  await options.root.run("mkfs.ext4", [
    "-q",
    "-F",
    "-d",
    root,
    ...MKFS_OPTIONS,
    image,
    `${bytes / 1024}k`,
  ]);
}
