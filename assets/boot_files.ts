/**
 * A user's own boot files (`--kernel`, `--initrd`, `--rootfs`), checked before anything boots,
 * each failure one line naming the file and what it should be:
 *
 * - kernel: for an x86_64 guest, an x86-64 ELF with a Xen PVH entry note (what QEMU's `microvm`
 *   boots), or a bzImage (`HdrS` at 0x202) with an xz payload, whose ELF is extracted once and
 *   cached by the bzImage's SHA-256; for an arm64 guest, an arm64 `Image` (`ARM\x64` at 0x38),
 *   or a gzip'd one, decompressed once and cached the same way;
 * - initramfs: a cpio archive (`070701`/`070702`), plain or gzip/xz/zstd/lz4/bzip2-compressed;
 * - root filesystem: ext2/3/4 (magic `0xEF53` at byte 1080); it needs nothing of shuru's, since
 *   the agent comes from the tools disk.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { AssetError } from "./errors.ts";
import type { GuestArch } from "../host/mod.ts";
import { arm64Image, extractKernel, inspectElf, isArm64Image } from "./kernel.ts";

function invalid(what: string, path: string, why: string): AssetError {
  return new AssetError("boot_file_invalid", `Cannot use ${path} as the ${what}: ${why}`);
}

async function openChecked(what: string, path: string): Promise<Deno.FsFile> {
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw invalid(what, path, "it is not a regular file");
    return await Deno.open(path);
  } catch (err) {
    if (err instanceof AssetError) throw err;
    if (err instanceof Deno.errors.NotFound) throw invalid(what, path, "no such file");
    if (err instanceof Deno.errors.PermissionDenied) {
      throw invalid(what, path, "it is not readable");
    }
    throw invalid(what, path, (err as Error).message);
  }
}

async function head(file: Deno.FsFile, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await file.read(buf.subarray(got));
    if (r === null) break;
    got += r;
  }
  return buf.subarray(0, got);
}

/** Options of {@linkcode checkKernel}. */
export interface CheckKernelOptions {
  /** Where extracted kernels are cached (`<assets>/cache/kernels`). */
  cacheDir: string;
  /** The guest's architecture (default `x86_64`): the kernel must be of it. */
  arch?: GuestArch;
}

/** Writes `bytes` to `cached` (atomically) and returns that path. */
async function cache(cached: string, bytes: Uint8Array): Promise<string> {
  await Deno.mkdir(join(cached, ".."), { recursive: true });
  const tmp = `${cached}.${crypto.randomUUID()}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, cached);
  return cached;
}

/** An arm64 kernel: an `Image` as is, a gzip'd one decompressed (and cached). */
async function checkArm64Kernel(
  path: string,
  bytes: Uint8Array,
  cacheDir: string,
): Promise<string> {
  if (isArm64Image(bytes)) return path;
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) {
    throw invalid("kernel", path, "it is not an arm64 Image (no ARM\\x64 magic at 0x38)");
  }
  const cached = join(cacheDir, `${createHash("sha256").update(bytes).digest("hex")}.Image`);
  if (await Deno.stat(cached).then(() => true, () => false)) return cached;
  let image: Uint8Array;
  try {
    image = await arm64Image(bytes);
  } catch {
    throw invalid("kernel", path, "it is gzip'd but not an arm64 Image inside");
  }
  return await cache(cached, image);
}

/**
 * Checks a kernel and returns the path QEMU boots: the file itself when it is a PVH ELF, else
 * the cached ELF extracted from the bzImage.
 *
 * @throws {AssetError} `boot_file_invalid`.
 */
export async function checkKernel(path: string, options: CheckKernelOptions): Promise<string> {
  const what = "kernel";
  const file = await openChecked(what, path);
  let bytes: Uint8Array;
  try {
    bytes = await new Response(file.readable).bytes();
  } catch (err) {
    throw invalid(what, path, (err as Error).message);
  }
  if (options.arch === "arm64") return await checkArm64Kernel(path, bytes, options.cacheDir);
  if (bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46) {
    const info = inspectElf(bytes);
    if (!info.x86_64) throw invalid(what, path, "it is an ELF file but not an x86-64 kernel");
    if (!info.pvh) {
      throw invalid(
        what,
        path,
        "it is an x86-64 ELF without a PVH entry note (build with CONFIG_PVH=y, or give the bzImage)",
      );
    }
    return path;
  }
  const bz = bytes.length > 0x206 &&
    new TextDecoder().decode(bytes.subarray(0x202, 0x206)) === "HdrS";
  if (!bz) {
    throw invalid(what, path, "it is neither a PVH ELF kernel (vmlinux) nor a bzImage (vmlinuz)");
  }
  const sha = createHash("sha256").update(bytes).digest("hex");
  const cached = join(options.cacheDir, `${sha}.vmlinux`);
  try {
    await Deno.stat(cached);
    return cached;
  } catch {
    // extract below
  }
  let elf: Uint8Array;
  try {
    elf = await extractKernel(bytes);
  } catch (err) {
    throw invalid(
      what,
      path,
      `it is a bzImage without an xz-compressed PVH kernel inside (${(err as Error).message})`,
    );
  }
  return await cache(cached, elf);
}

const CPIO_MAGICS = ["070701", "070702", "070707"];
const COMPRESSED: [string, number[]][] = [
  ["gzip", [0x1f, 0x8b]],
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["lz4", [0x02, 0x21, 0x4c, 0x18]],
  ["bzip2", [0x42, 0x5a, 0x68]],
];

/**
 * Checks an initramfs: readable, and a cpio archive, plain or compressed.
 *
 * @throws {AssetError} `boot_file_invalid`.
 */
export async function checkInitrd(path: string): Promise<void> {
  const file = await openChecked("initramfs", path);
  try {
    const b = await head(file, 8);
    const text = new TextDecoder().decode(b.subarray(0, 6));
    if (CPIO_MAGICS.includes(text)) return;
    if (COMPRESSED.some(([, m]) => m.every((x, i) => b[i] === x))) return;
    throw invalid(
      "initramfs",
      path,
      b.length === 0
        ? "it is empty"
        : "it is not a cpio archive (plain, gzip, xz, zstd, lz4 or bzip2)",
    );
  } finally {
    file.close();
  }
}

/**
 * Checks a root filesystem image: readable and ext2/3/4; returns its size in bytes.
 *
 * @throws {AssetError} `boot_file_invalid`.
 */
export async function checkRootfs(path: string): Promise<number> {
  const what = "root filesystem";
  const file = await openChecked(what, path);
  try {
    const size = (await file.stat()).size;
    const b = await head(file, 2048);
    if (b.length < 1082 || b[1080] !== 0x53 || b[1081] !== 0xef) {
      throw invalid(what, path, "it is not an ext4 image (no ext2/3/4 superblock at byte 1024)");
    }
    if (size % 512 !== 0) {
      throw invalid(what, path, `its size ${size} is not whole 512-byte sectors`);
    }
    return size;
  } finally {
    file.close();
  }
}
