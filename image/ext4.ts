/**
 * Writes a {@linkcode RootTree} into an ext4 image without root on the host.
 *
 * 1. The staging folder gets each node's permission bits (kept readable and writable by us,
 *    {@linkcode stagedMode}) and modification time.
 * 2. `mkfs.ext4 -d` copies the folder into a new filesystem (no mount, no loop device): file
 *    data, directories, symlinks, hard links; owners and modes as staged.
 * 3. One `debugfs -w` script fixes what staging could not hold: each owner and mode that
 *    differs from the staged one (`sif`), every extended attribute (`ea_set`), and the device
 *    nodes and FIFOs (`mknod`). debugfs reports failures on stderr but exits 0, so any line
 *    there besides its banner fails the build.
 *
 * Measured on this host (`docs/images.md`): `sif` runs at about 20,000 commands a second, so a
 * Debian image converted by a non-root user (every file's owner differs from the staged one)
 * costs about a second of debugfs; as root only the exceptions need commands.
 *
 * @module
 */

import { join } from "node:path";
import { runTool } from "../assets/mod.ts";
import { ImageError } from "./errors.ts";
import { type NodeMeta, type RootTree, stagedMode, type TreeNode } from "./unpack.ts";

/** Options of {@linkcode writeExt4}. */
export interface WriteExt4Options {
  /** The image file to create (overwritten). */
  image: string;
  /** Filesystem size in bytes (whole KiB). */
  bytes: number;
  /** Filesystem label. @default "shuru-image" */
  label?: string;
  /** A scratch folder for the debugfs script and xattr values. */
  workDir: string;
}

/** What {@linkcode writeExt4} did. */
export interface WriteExt4Result {
  /** debugfs commands run. */
  commands: number;
  /** Milliseconds in `mkfs.ext4`. */
  mkfsMs: number;
  /** Milliseconds in `debugfs`. */
  debugfsMs: number;
}

/** mkfs.ext4 options: 4 KiB blocks, the default inode ratio, no blocks reserved for root. */
export const IMAGE_MKFS_OPTIONS: readonly string[] = ["-T", "default", "-m", "0", "-b", "4096"];

/** Inodes `mkfs.ext4 -T default` makes for `bytes` (one per 16 KiB). */
export function inodesFor(bytes: number): number {
  return Math.floor(bytes / 16384);
}

const TYPE_BITS = {
  dir: 0o040000,
  file: 0o100000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
} as const;

/** A path as a debugfs argument: in double quotes, a quote doubled. */
function q(path: string): string {
  return `"${path.replaceAll('"', '""')}"`;
}

/** Writes the tree's staging folder and metadata into `options.image`; see the module doc. */
export async function writeExt4(
  tree: RootTree,
  options: WriteExt4Options,
): Promise<WriteExt4Result> {
  const uid = Deno.uid() ?? 0;
  const gid = Deno.gid() ?? 0;
  const commands: string[] = [];
  let values = 0;
  const valueDir = join(options.workDir, "xattrs");
  await Deno.mkdir(valueDir, { recursive: true });
  const seenInodes = new Set<object>();

  const fixMeta = (path: string, kind: keyof typeof TYPE_BITS, meta: NodeMeta, staged: number) => {
    if (meta.uid !== uid) commands.push(`sif ${q(path)} uid ${meta.uid}`);
    if (meta.gid !== gid) commands.push(`sif ${q(path)} gid ${meta.gid}`);
    const want = TYPE_BITS[kind] | (meta.mode & 0o7777);
    if (want !== (TYPE_BITS[kind] | staged)) {
      commands.push(`sif ${q(path)} mode 0${want.toString(8)}`);
    }
    for (const [name, value] of meta.xattrs) {
      const file = join(valueDir, String(values++));
      Deno.writeFileSync(file, value);
      commands.push(`ea_set -f ${q(file)} ${q(path)} ${q(name)}`);
    }
  };

  // Pre-order for the script (parents before children), post-order for the staging folder's
  // times (a folder's mtime changes as its children are made).
  const walk = (node: TreeNode, parts: string[]) => {
    const path = "/" + parts.join("/");
    const host = join(tree.stageDir, ...parts);
    if (node.kind === "dir") {
      const staged = stagedMode("dir", node.meta.mode);
      fixMeta(path, "dir", node.meta, staged & 0o7777);
      for (const [name, child] of node.children) walk(child, [...parts, name]);
      Deno.chmodSync(host, staged);
      Deno.utimeSync(host, node.meta.mtime, node.meta.mtime);
    } else if (node.kind === "file") {
      const staged = stagedMode("file", node.inode.meta.mode);
      // Metadata belongs to the inode: fix it through its first name only.
      if (!seenInodes.has(node.inode)) {
        seenInodes.add(node.inode);
        fixMeta(path, "file", node.inode.meta, staged & 0o7777);
        Deno.chmodSync(host, staged);
        Deno.utimeSync(host, node.inode.meta.mtime, node.inode.meta.mtime);
      }
    } else if (node.kind === "symlink") {
      // Symlink modes are always 0777; owner and xattrs still apply.
      fixMeta(path, "symlink", { ...node.meta, mode: 0o777 }, 0o777);
    } else {
      const dir = "/" + parts.slice(0, -1).join("/");
      const name = parts[parts.length - 1]!;
      const spec = node.kind === "fifo" ? "p" : `${node.kind === "char" ? "c" : "b"} ` +
        `${node.major} ${node.minor}`;
      commands.push(`cd ${q(dir)}`, `mknod ${q(name)} ${spec}`, "cd /");
      // mknod makes the node with no permission bits and owned by the caller of debugfs.
      const meta = node.meta;
      commands.push(`sif ${q(path)} mode 0${(TYPE_BITS[node.kind] | meta.mode).toString(8)}`);
      commands.push(`sif ${q(path)} uid ${meta.uid}`, `sif ${q(path)} gid ${meta.gid}`);
      for (const [name, value] of meta.xattrs) {
        const file = join(valueDir, String(values++));
        Deno.writeFileSync(file, value);
        commands.push(`ea_set -f ${q(file)} ${q(path)} ${q(name)}`);
      }
    }
  };
  walk(tree.root, []);

  const t0 = performance.now();
  await Deno.remove(options.image).catch(() => {});
  try {
    await runTool("mkfs.ext4", [
      "-q",
      "-F",
      "-d",
      tree.stageDir,
      "-L",
      options.label ?? "shuru-image",
      ...IMAGE_MKFS_OPTIONS,
      options.image,
      `${Math.floor(options.bytes / 1024)}k`,
    ]);
  } catch (err) {
    const text = (err as Error).message;
    if (/Could not allocate|No space left|Could not allocate block/i.test(text)) {
      throw new ImageError(
        "too_large",
        `Cannot write the image's filesystem: ${Math.ceil(tree.bytes / 1048576)} MiB of files ` +
          `do not fit a ${Math.floor(options.bytes / 1048576)} MiB disk with ext4's overhead ` +
          "(use a larger --disk-size)",
        { cause: err },
      );
    }
    throw new ImageError("command_failed", `Cannot write the image's filesystem: ${text}`, {
      cause: err,
    });
  }
  const t1 = performance.now();
  if (commands.length > 0) {
    const script = join(options.workDir, "debugfs.cmd");
    await Deno.writeTextFile(script, commands.join("\n") + "\n");
    const out = await new Deno.Command("debugfs", {
      args: ["-w", "-f", script, options.image],
      stdout: "null",
      stderr: "piped",
    }).output().catch((err) => {
      throw new ImageError(
        "command_failed",
        `Cannot run debugfs: ${(err as Error).message} (install e2fsprogs)`,
        { cause: err },
      );
    });
    const errors = new TextDecoder().decode(out.stderr).split("\n")
      .filter((l) => l.trim() !== "" && !/^debugfs \d/.test(l));
    if (!out.success || errors.length > 0) {
      throw new ImageError(
        "command_failed",
        `Cannot set owners, modes and attributes in the image's filesystem: debugfs said ` +
          `${JSON.stringify(errors.slice(0, 3).join("; "))}`,
      );
    }
  }
  return {
    commands: commands.length,
    mkfsMs: Math.round(t1 - t0),
    debugfsMs: Math.round(performance.now() - t1),
  };
}
