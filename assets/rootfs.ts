/**
 * The root filesystem image: a Debian base made by mmdebstrap (cached as a tarball keyed by
 * its recipe), plus Deno, the guest agent bundle and shuru's init scripts, written into an
 * ext4 image with `mkfs.ext4 -d` (no mounting, no loop devices).
 *
 * @module
 */

import { join } from "node:path";
import { runTool } from "./run.ts";
import { primeAgentCache } from "./deno_cache.ts";
import { INITRAMFS_MARKER, PREPARED_MARKER, ROOTFS_INIT } from "./initramfs.ts";

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

/** Where the agent bundle lives in the guest. */
export const GUEST_AGENT_PATH = "/opt/shuru/agent.js";
/** Where Deno lives in the guest. */
export const GUEST_DENO_PATH = "/usr/local/bin/deno";
/**
 * The agent's own Deno cache (DENO_DIR), filled at build time (see `deno_cache.ts`); not the
 * user's `~/.cache/deno`, and not passed on to the processes the agent starts.
 */
export const GUEST_AGENT_DENO_DIR = "/var/cache/shuru/deno";
/** The script tini runs: the agent, then sync and power off. */
export const GUEST_AGENT_RUNNER = "/usr/local/lib/shuru/agent-run";
/** File holding the filesystem size in bytes, so init can tell when the disk grew. */
export const GUEST_FS_BYTES_PATH = "/etc/shuru/fs-bytes";
/** Printed by the rootfs init right before it starts the agent. */
export const AGENT_START_MARKER = "shuru-init: agent start";

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
 * The root filesystem's init (PID 1 until it execs tini): mounts the pseudo filesystems,
 * grows the filesystem when the disk is larger than it, then `exec tini` → the agent.
 */
export function guestInitScript(): string {
  return `#!/bin/sh
# shuru guest init: PID 1 after switch_root. Replaced by tini, which runs the agent.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
read -r up _ < /proc/uptime
echo "shuru-init: start $up"
# shuru's initramfs mounts everything below (busybox in RAM is cheaper to start than this
# root's mount); without it (another initramfs, or none), do it here.
if [ ! -e ${PREPARED_MARKER} ]; then
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
fi
# Grow the filesystem online when the disk is larger than it (shuru run --disk-size).
read -r sectors < /sys/block/vda/size
disk=$((sectors * 512))
fs=0
[ -r ${GUEST_FS_BYTES_PATH} ] && read -r fs < ${GUEST_FS_BYTES_PATH}
if [ "$disk" -gt "$fs" ]; then
  if resize2fs /dev/vda >/dev/null 2>&1; then
    echo "$disk" > ${GUEST_FS_BYTES_PATH}
    read -r up _ < /proc/uptime
    echo "shuru-init: filesystem grown to $disk bytes $up"
  else
    echo "shuru-init: warning: cannot grow the filesystem to $disk bytes"
  fi
fi
read -r up _ < /proc/uptime
echo "${AGENT_START_MARKER} $up"
exec tini -s -- ${GUEST_AGENT_RUNNER}
`;
}

/**
 * The agent runner: runs the agent; when it exits, stops what is left, flushes the disk,
 * and powers the VM off so QEMU exits (the host then sees the VM end).
 */
export function agentRunnerScript(): string {
  return `#!/bin/sh
# Runs the shuru guest agent; when it exits, flush the disk and power off.
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
DENO_DIR=${GUEST_AGENT_DENO_DIR} ${GUEST_DENO_PATH} run -A --no-check ${GUEST_AGENT_PATH}
status=$?
[ "$status" = 0 ] || echo "shuru-init: agent exited with status $status"
kill -s KILL -1 2>/dev/null
sync
mount -o remount,ro / 2>/dev/null
echo o > /proc/sysrq-trigger
# The power-off is asynchronous: wait without touching the disk (it is going away).
read -r _ < /dev/console
`;
}

/** Files shuru adds to the Debian tree (paths relative to the root). */
export interface RootfsAdditions {
  /** The Deno binary's bytes source path on the host. */
  denoBinary: string;
  /** The bundled agent JavaScript. */
  agentBundle: Uint8Array;
  /** Program prefix that runs that Deno here (qemu-user for a foreign one; default: none). */
  denoRunner?: readonly string[];
}

/** Writes shuru's files into the unpacked Debian tree at `root`. */
export async function addShuruFiles(root: string, add: RootfsAdditions): Promise<void> {
  const write = async (path: string, data: string | Uint8Array, mode: number) => {
    const full = join(root, path);
    await Deno.mkdir(join(full, ".."), { recursive: true });
    if (typeof data === "string") await Deno.writeTextFile(full, data);
    else await Deno.writeFile(full, data);
    await Deno.chmod(full, mode);
  };
  await Deno.mkdir(join(root, "usr/local/bin"), { recursive: true });
  await Deno.copyFile(add.denoBinary, join(root, GUEST_DENO_PATH));
  await Deno.chmod(join(root, GUEST_DENO_PATH), 0o755);
  await write(GUEST_AGENT_PATH, add.agentBundle, 0o644);
  await primeAgentCache(root, {
    denoBinary: add.denoBinary,
    ...(add.denoRunner ? { runner: add.denoRunner } : {}),
    agentPath: GUEST_AGENT_PATH,
    cacheDir: GUEST_AGENT_DENO_DIR,
  });
  await write(ROOTFS_INIT, guestInitScript(), 0o755);
  await write(GUEST_AGENT_RUNNER, agentRunnerScript(), 0o755);
  await write("etc/hostname", "shuru\n", 0o644);
  await write("etc/hosts", "127.0.0.1\tlocalhost shuru\n::1\tlocalhost ip6-localhost\n", 0o644);
}

/** Total size in bytes of the files under `dir` (apparent sizes), via `du`. */
export async function treeBytes(dir: string): Promise<number> {
  const out = new TextDecoder().decode(await runTool("du", ["-sb", dir]));
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

/** Makes `image` (size `bytes`) an ext4 filesystem holding the tree at `root`. */
export async function makeExt4(root: string, image: string, bytes: number): Promise<void> {
  const sizeFile = join(root, GUEST_FS_BYTES_PATH.slice(1));
  await Deno.mkdir(join(sizeFile, ".."), { recursive: true });
  await Deno.writeTextFile(sizeFile, `${bytes}\n`);
  await runTool("mkfs.ext4", ["-q", "-F", "-d", root, ...MKFS_OPTIONS, image, `${bytes / 1024}k`]);
}

/** Marker printed by the initramfs, re-exported for boot phase parsing. */
export { INITRAMFS_MARKER };
