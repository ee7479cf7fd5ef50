/**
 * The tools disk: everything shuru runs inside a guest, on a read-only ext4 image of its own,
 * so the root filesystem (shuru's Debian image, any OCI image, a user's ext4) needs nothing of
 * ours: not even a libc. The initramfs mounts it at {@link TOOLS_MOUNT} (a tmpfs) and
 * `switch_root`s into {@link TOOLS_INIT}.
 *
 * ```
 * /run/shuru/tools/
 *   init              PID 1 after switch_root (busybox sh): grows the filesystem, execs tini
 *   agent-run         tini's child: runs the agent; then kills what is left, syncs, powers off
 *   agent.js          the agent bundle
 *   deno-cache/       the agent's Deno cache, filled on the host (copied to tmpfs at boot)
 *   bin/busybox, bin/sh -> busybox, bin/tini (static)
 *   bin/deno          the guest architecture's Deno binary
 *   libexec/setpriv, libexec/resize2fs    dynamic programs
 *   lib/              the loader (also as lib/ld.so) and every library the above need
 * ```
 *
 * One disk per guest architecture, of that architecture's programs (see {@linkcode ToolsRoot}):
 * for the host's own, its Deno, busybox, tini, setpriv, resize2fs and libraries; for a foreign
 * one (arm64 on an x86_64 host), npm's Deno for it, busybox from its Debian package, and tini,
 * setpriv, resize2fs and every library from its Debian base (the tarball its root filesystem is
 * made from), their libraries found by that architecture's loader run under qemu-user.
 *
 * Dynamic programs run through the disk's own loader, never the root's:
 * `lib/ld.so --library-path lib --inhibit-cache PROGRAM` ({@linkcode toolsCommand}), the same
 * words for every architecture. The path is not exported to the environment, so the agent's
 * children use the image's own libraries as usual.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { ASSET_TOOLS, findCommand, missingToolsError } from "../host/mod.ts";
import type { ArchSpec } from "./arch.ts";
import { AGENT_START_MARKER, POWER_OFF_MARKER } from "../proto/mod.ts";
import type { AsRoot } from "./as_root.ts";
import { AssetError } from "./errors.ts";
import { runTool } from "./run.ts";
import { primeAgentCache } from "./deno_cache.ts";
import { PREPARED_MARKER } from "./initramfs.ts";
import { ROOT_DEVICE_FILE, TOOLS_MOUNT } from "./guest_paths.ts";

/** The agent's Deno cache at run time (a tmpfs copy of the disk's). */
export const GUEST_AGENT_DENO_DIR = "/run/shuru/deno";
/** The agent bundle in the guest. */
export const GUEST_AGENT_PATH = `${TOOLS_MOUNT}/agent.js`;
/** The tools disk's loader under one name for every architecture (a link to its own name). */
const LOADER_LINK = "ld.so";

/** A program of the tools disk as an argv prefix the guest agent can run in any root. */
export function toolsCommand(program: "setpriv" | "resize2fs" | "deno"): string[] {
  const dir = program === "deno" ? "bin" : "libexec";
  return [
    `${TOOLS_MOUNT}/lib/${LOADER_LINK}`,
    "--library-path",
    `${TOOLS_MOUNT}/lib`,
    "--inhibit-cache",
    `${TOOLS_MOUNT}/${dir}/${program}`,
  ];
}

/** The tools disk's busybox (static), for shell steps in any root. */
export const TOOLS_BUSYBOX = `${TOOLS_MOUNT}/bin/busybox`;

/**
 * The init after `switch_root` (busybox sh from the tools disk, PID 1 until it execs tini):
 * grows the root filesystem when the disk is larger than it (the sizes come from the disk and
 * the ext4 superblock, so no root needs a file of ours), copies the agent's cache to tmpfs,
 * then `exec tini`.
 */
export function toolsInitScript(): string {
  const T = TOOLS_MOUNT;
  return `#!${T}/bin/sh
# shuru guest init (from the tools disk): PID 1 after switch_root, replaced by tini.
bb=${T}/bin/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
read -r up _ < /proc/uptime
echo "shuru-init: start $up"
[ -e ${PREPARED_MARKER} ] || { echo "shuru-init: error: started without shuru's initramfs"; exit 1; }
read -r root < ${ROOT_DEVICE_FILE}
# Grow the filesystem online when the disk is larger (shuru run --disk-size). ext4 superblock at
# byte 1024: s_blocks_count_lo at +4, s_log_block_size at +24, s_blocks_count_hi at +336.
read -r sectors < /sys/block/$root/size
disk=$((sectors * 512))
lo=$($bb hexdump -s 1028 -n 4 -e '1/4 "%u"' /dev/$root)
hi=$($bb hexdump -s 1360 -n 4 -e '1/4 "%u"' /dev/$root)
log=$($bb hexdump -s 1048 -n 4 -e '1/4 "%u"' /dev/$root)
fs=$(( (hi * 4294967296 + lo) * (1024 << log) ))
if [ "$disk" -ge $((fs + 1048576)) ]; then
  if ${toolsCommand("resize2fs").join(" ")} /dev/$root >/dev/null 2>&1; then
    read -r up _ < /proc/uptime
    echo "shuru-init: filesystem grown to $disk bytes $up"
  else
    echo "shuru-init: warning: cannot grow the filesystem to $disk bytes"
  fi
fi
$bb cp -a ${T}/deno-cache ${GUEST_AGENT_DENO_DIR}
read -r up _ < /proc/uptime
echo "${AGENT_START_MARKER} $up"
exec ${T}/bin/tini -s -- ${T}/agent-run
`;
}

/**
 * The agent runner (tini's child): runs the agent; when it exits, stops what is left, flushes
 * the disk and powers the VM off, so QEMU exits and the host sees the VM end.
 */
export function toolsAgentRunScript(): string {
  const T = TOOLS_MOUNT;
  return `#!${T}/bin/sh
# Runs the shuru guest agent; when it exits, flush the disk and power off.
bb=${T}/bin/busybox
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
DENO_DIR=${GUEST_AGENT_DENO_DIR} ${
    toolsCommand("deno").join(" ")
  } run -A --no-check ${GUEST_AGENT_PATH}
status=$?
[ "$status" = 0 ] || echo "shuru-init: agent exited with status $status"
# The shell's own kill: a kill(-1) from a separate process would end this script too.
kill -s KILL -1 2>/dev/null
$bb sync
$bb mount -o remount,ro / 2>/dev/null
echo "${POWER_OFF_MARKER}"
echo o > /proc/sysrq-trigger
# The power-off is asynchronous: wait without touching the disk (it is going away).
read -r _ < /dev/console
`;
}

/**
 * Where the tools disk's programs and libraries come from: a root whose library folders the
 * architecture's loader searches (`/` for the host's own architecture, an unpacked Debian base
 * for a foreign one), and how to run that architecture's programs here.
 */
export interface ToolsRoot {
  /** The root the programs' libraries are found in (`/`: the host). */
  root: string;
  /** Runs a program of the architecture here: none natively, `qemu-user -L root` otherwise. */
  runner: string[];
  /** The loader's path as its programs name it (`/lib64/ld-linux-x86-64.so.2`). */
  loader: string;
  /** Host paths of the programs: a static tini, setpriv and resize2fs. */
  programs: { tini: string; setpriv: string; resize2fs: string };
}

/** What goes on the tools disk. */
export interface ToolsInputs {
  /** The Deno binary of the guest's architecture. */
  denoBinary: string;
  /** The agent bundle. */
  agentBundle: Uint8Array;
  /** A static busybox of the guest's architecture. */
  busybox: Uint8Array;
  /** Where tini, setpriv, resize2fs and the libraries come from. */
  from: ToolsRoot;
}

/** The host programs the tools disk takes for the host's own architecture, by role. */
export const HOST_TOOLS_PROGRAMS = {
  tini: "tini-static",
  setpriv: "setpriv",
  resize2fs: "resize2fs",
} as const;

/**
 * The host's own programs for the tools disk, found in `path` and the standard folders.
 *
 * @throws {HostError} `missing_host_tools` naming the packages of missing ones.
 */
export function hostToolsRoot(spec: ArchSpec, path = ""): ToolsRoot {
  const found = (role: keyof typeof HOST_TOOLS_PROGRAMS) =>
    findCommand(HOST_TOOLS_PROGRAMS[role], path);
  const missing = ASSET_TOOLS.filter((t) =>
    Object.values(HOST_TOOLS_PROGRAMS).some((c) => c === t.command) && !findCommand(t.command, path)
  );
  if (missing.length > 0) {
    throw missingToolsError(missing.map((tool) => ({ tool, reason: "not found" })));
  }
  return {
    root: "/",
    runner: [],
    loader: spec.loader,
    programs: { tini: found("tini")!, setpriv: found("setpriv")!, resize2fs: found("resize2fs")! },
  };
}

/**
 * A foreign architecture's programs for the tools disk: tini, setpriv, resize2fs, the loader
 * and the multiarch library folder of the Debian base `tarball`, unpacked into `dir`; run here
 * through `options.qemuUser` with `dir` as its library prefix.
 */
export async function debianToolsRoot(
  spec: ArchSpec,
  tarball: string,
  dir: string,
  options: { qemuUser: string },
): Promise<ToolsRoot> {
  const programs = {
    tini: "usr/bin/tini-static",
    setpriv: "usr/bin/setpriv",
    resize2fs: "usr/sbin/resize2fs",
  };
  await Deno.mkdir(dir, { recursive: true });
  // Debian's root is merged-/usr: /lib (/lib64) is a link to usr/lib (usr/lib64).
  await runTool("tar", [
    "-xf",
    tarball,
    "-C",
    dir,
    `.${dirname(spec.loader)}`,
    `./usr${spec.loader}`,
    `./usr/lib/${spec.triplet}`,
    ...Object.values(programs).map((p) => `./${p}`),
  ]);
  return {
    root: dir,
    runner: [options.qemuUser, "-L", dir],
    loader: spec.loader,
    programs: {
      tini: join(dir, programs.tini),
      setpriv: join(dir, programs.setpriv),
      resize2fs: join(dir, programs.resize2fs),
    },
  };
}

/**
 * Parses the loader's `--list` output (what `ldd` prints): the libraries as `[soname, path in
 * the root]`; the loader's own line and the vDSO are left out. A library the loader cannot find
 * fails, naming it.
 */
export function parseLibraryList(program: string, out: string): [string, string][] {
  const libs: [string, string][] = [];
  for (const line of out.split("\n")) {
    const arrow = /^\s*([^\s/]\S*) => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (arrow) libs.push([arrow[1]!, arrow[2]!]);
    else if (/not found/.test(line)) {
      throw new AssetError(
        "command_failed",
        `Cannot build the tools disk: ${program} needs a library its root lacks: ${line.trim()}`,
      );
    }
  }
  return libs;
}

/**
 * The shared libraries `program` loads, as `[soname, host path]`, the loader included: its
 * loader in `--list` mode (what `ldd` runs), through `from.runner` for a foreign architecture.
 */
export async function sharedLibraries(
  program: string,
  from: ToolsRoot,
): Promise<[string, string][]> {
  const loader = join(from.root, from.loader);
  const argv = [...from.runner, loader, "--list", program];
  const out = new TextDecoder().decode(await runTool(argv[0]!, argv.slice(1)));
  return [
    [basename(from.loader), loader],
    ...parseLibraryList(program, out).map(([name, path]): [string, string] => [
      name,
      join(from.root, path),
    ]),
  ];
}

/**
 * Writes the tools tree to `<root>${TOOLS_MOUNT}` (the tree as the guest sees it, so the
 * agent's cache is primed at its guest path); returns that folder.
 */
export async function buildToolsTree(root: string, inputs: ToolsInputs): Promise<string> {
  const dir = join(root, TOOLS_MOUNT);
  for (const sub of ["bin", "lib", "libexec"]) {
    await Deno.mkdir(join(dir, sub), { recursive: true });
  }
  const { from } = inputs;
  const copy = async (source: string, to: string, mode: number) => {
    await Deno.copyFile(source, join(dir, to));
    await Deno.chmod(join(dir, to), mode);
  };
  await Deno.writeFile(join(dir, "bin/busybox"), inputs.busybox, { mode: 0o755 });
  await Deno.chmod(join(dir, "bin/busybox"), 0o755);
  await Deno.symlink("busybox", join(dir, "bin/sh"));
  await copy(from.programs.tini, "bin/tini", 0o755);
  await copy(inputs.denoBinary, "bin/deno", 0o755);
  const libraries = new Map<string, string>(await sharedLibraries(inputs.denoBinary, from));
  for (const name of ["setpriv", "resize2fs"] as const) {
    await copy(from.programs[name], `libexec/${name}`, 0o755);
    for (const [soname, path] of await sharedLibraries(from.programs[name], from)) {
      libraries.set(soname, path);
    }
  }
  for (const [soname, path] of libraries) {
    // Copy the file behind the symlinks, under the name the loader looks for.
    await copy(await Deno.realPath(path), `lib/${basename(soname)}`, 0o755);
  }
  await Deno.symlink(basename(from.loader), join(dir, "lib", LOADER_LINK));
  await Deno.writeFile(join(dir, "agent.js"), inputs.agentBundle);
  // The code cache is the architecture's: a foreign Deno fills it under qemu-user.
  await primeAgentCache(root, {
    denoBinary: inputs.denoBinary,
    ...(from.runner.length > 0 ? { runner: from.runner } : {}),
    agentPath: GUEST_AGENT_PATH,
    cacheDir: `${TOOLS_MOUNT}/deno-cache`,
  });
  await Deno.writeTextFile(join(dir, "init"), toolsInitScript(), { mode: 0o755 });
  await Deno.chmod(join(dir, "init"), 0o755);
  await Deno.writeTextFile(join(dir, "agent-run"), toolsAgentRunScript());
  await Deno.chmod(join(dir, "agent-run"), 0o755);
  return dir;
}

/** mkfs.ext4 options of the tools disk: read-only, so no journal and no reserved blocks. */
export const TOOLS_MKFS_OPTIONS: readonly string[] = [
  "-L",
  "shuru-tools",
  "-O",
  "^has_journal",
  "-m",
  "0",
  "-T",
  "default",
];

/**
 * Writes `tree` into the ext4 image `image`, sized to fit, its files owned by root as
 * `options.root` sees it; returns its size in bytes.
 */
export async function makeToolsImage(
  tree: string,
  image: string,
  options: { root: AsRoot },
): Promise<number> {
  const out = new TextDecoder().decode(await runTool("du", ["-sb", tree]));
  const content = Number(out.split(/\s/)[0]);
  const mib = 1048576;
  const bytes = Math.ceil((content * 1.1 + 16 * mib) / mib) * mib;
  await options.root.run("mkfs.ext4", [
    "-q",
    "-F",
    "-d",
    tree,
    ...TOOLS_MKFS_OPTIONS,
    image,
    `${bytes / 1024}k`,
  ]);
  return bytes;
}
