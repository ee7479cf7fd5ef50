/**
 * Helpers for the image tests: layers written by GNU tar from trees built on the host, and an
 * independent reader of ext4 images (debugfs).
 *
 * @module
 */

import { join } from "node:path";

/** Runs a program; throws with its stderr when it fails; returns stdout as text. */
export async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/**
 * A tar layer (pax, with xattrs and numeric owners) of the tree `build` makes in a scratch
 * folder. Runs as root (tests chown files and make device nodes).
 */
export async function tarLayer(
  build: (dir: string) => Promise<void>,
  members: string[] = ["."],
): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-layer-" });
  try {
    await build(dir);
    const out = await new Deno.Command("tar", {
      args: [
        "-c",
        "--format=pax",
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-C",
        dir,
        ...members,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return out.stdout;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A stream over `bytes`. */
export function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
}

/** One line of `debugfs -R "stat PATH"`: type, mode, uid, gid, size; undefined when absent. */
export interface Ext4Stat {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
}

/** Stats `path` in the ext4 image with debugfs (an independent reader). */
export async function ext4Stat(image: string, path: string): Promise<Ext4Stat | undefined> {
  const out = await new Deno.Command("debugfs", {
    args: ["-R", `stat "${path.replaceAll('"', '""')}"`, image],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const m = /Type: (.+?)\s+Mode:\s+(\d+)/.exec(text);
  if (!m) return undefined;
  const owner = /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(text)!;
  const size = /Size: (\d+)/.exec(text)!;
  const links = /Links: (\d+)/.exec(text)!;
  return {
    type: m[1]!,
    mode: parseInt(m[2]!, 8),
    uid: Number(owner[1]),
    gid: Number(owner[2]),
    size: Number(size[1]),
    links: Number(links[1]),
  };
}

/** The content of `path` in the image (debugfs `cat`). */
export async function ext4Cat(image: string, path: string): Promise<string> {
  return await sh("debugfs", ["-R", `cat "${path}"`, image]);
}

/** Extended attributes of `path` (debugfs `ea_list`), as printed. */
export async function ext4Xattrs(image: string, path: string): Promise<string> {
  return await sh("debugfs", ["-R", `ea_list "${path}"`, image]);
}

/** The symlink target of `path` (from debugfs `stat`'s "Fast link dest"). */
export async function ext4Readlink(image: string, path: string): Promise<string | undefined> {
  const text = await sh("debugfs", ["-R", `stat "${path}"`, image]);
  return /Fast link dest: "(.*)"/.exec(text)?.[1];
}

/** `e2fsck -fn`: throws with its output unless the filesystem is clean. */
export async function e2fsckClean(image: string): Promise<void> {
  const out = await new Deno.Command("e2fsck", {
    args: ["-fn", image],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(`e2fsck found problems: ${dec.decode(out.stdout)}${dec.decode(out.stderr)}`);
  }
}

/** A temp folder removed on dispose. */
export async function tempDir(prefix = "shuru-image-test-"): Promise<
  { path: string; join: (...p: string[]) => string } & AsyncDisposable
> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    join: (...p: string[]) => join(path, ...p),
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}
