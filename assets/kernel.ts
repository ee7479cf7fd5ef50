/**
 * The guest kernel: the uncompressed ELF inside Debian's `vmlinuz`, booted via PVH.
 *
 * QEMU's `microvm` machine hangs with Debian's bzImage on these hosts, but boots the ELF
 * directly through its PVH entry point (Xen ELF note 18), which also skips the bzImage
 * decompressor. The bzImage carries the ELF as an xz stream; we find its magic and decompress.
 *
 * @module
 */

import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { hostArch } from "../host/mod.ts";
import { ARCH_SPECS } from "./arch.ts";
import { AssetError } from "./errors.ts";
import { runTool } from "./run.ts";

/** The magic bytes that open an xz stream. */
export const XZ_MAGIC: Uint8Array = Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00);

/** Xen ELF note type carrying the 32-bit PVH entry point. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** How many xz stream candidates to try before giving up. */
const MAX_CANDIDATES = 8;

/** Returns every offset in `data` where `magic` starts, at most `limit` of them. */
export function findAll(data: Uint8Array, magic: Uint8Array, limit: number): number[] {
  const found: number[] = [];
  const first = magic[0];
  let at = data.indexOf(first as number);
  while (at !== -1 && at + magic.length <= data.length && found.length < limit) {
    let match = true;
    for (let i = 1; i < magic.length; i++) {
      if (data[at + i] !== magic[i]) {
        match = false;
        break;
      }
    }
    if (match) found.push(at);
    at = data.indexOf(first as number, at + 1);
  }
  return found;
}

/** What {@linkcode inspectElf} learns from a kernel image. */
export interface ElfInfo {
  /** `true` for a 64-bit little-endian x86-64 ELF executable. */
  x86_64: boolean;
  /** `true` when a Xen PVH entry note is present (bootable by `microvm` via PVH). */
  pvh: boolean;
}

/** Reads the ELF header and PT_NOTE segments of `elf`; never reads out of bounds. */
export function inspectElf(elf: Uint8Array): ElfInfo {
  const none = { x86_64: false, pvh: false };
  if (elf.length < 64) return none;
  if (elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) return none;
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  // ELFCLASS64, little endian, EM_X86_64.
  const x86_64 = elf[4] === 2 && elf[5] === 1 && view.getUint16(18, true) === 0x3e;
  if (!x86_64) return none;
  const phoff = Number(view.getBigUint64(32, true));
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  let pvh = false;
  for (let i = 0; i < phnum && !pvh; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) break;
    if (view.getUint32(ph, true) !== 4) continue; // PT_NOTE
    const offset = Number(view.getBigUint64(ph + 8, true));
    const size = Number(view.getBigUint64(ph + 32, true));
    pvh = hasXenNote(view, offset, Math.min(offset + size, elf.length), XEN_ELFNOTE_PHYS32_ENTRY);
  }
  return { x86_64, pvh };
}

function hasXenNote(view: DataView, start: number, end: number, type: number): boolean {
  let at = start;
  while (at + 12 <= end) {
    const namesz = view.getUint32(at, true);
    const descsz = view.getUint32(at + 4, true);
    const noteType = view.getUint32(at + 8, true);
    const name = at + 12;
    if (
      namesz === 4 && noteType === type && name + 4 <= end &&
      view.getUint32(name, false) === 0x58656e00 // "Xen\0"
    ) return true;
    at = name + align4(namesz) + align4(descsz);
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Options of {@linkcode extractKernel}. */
export interface ExtractKernelOptions {
  /** The `xz` program (default `xz`). */
  xz?: string;
}

/**
 * Returns the uncompressed kernel ELF inside `vmlinuz` (a bzImage with an xz payload).
 * Throws {@linkcode AssetError} `kernel_invalid` when no xz stream decompresses to a
 * PVH-bootable x86-64 ELF.
 */
export async function extractKernel(
  vmlinuz: Uint8Array,
  options: ExtractKernelOptions = {},
): Promise<Uint8Array> {
  const candidates = findAll(vmlinuz, XZ_MAGIC, MAX_CANDIDATES);
  const problems: string[] = [];
  for (const at of candidates) {
    let elf: Uint8Array;
    try {
      // --single-stream: the bzImage continues after the payload; ignore what follows.
      elf = await runTool(options.xz ?? "xz", ["-dc", "--single-stream"], {
        stdin: vmlinuz.subarray(at),
      });
    } catch (err) {
      problems.push(`offset ${at}: ${(err as Error).message.split("\n")[0]}`);
      continue;
    }
    const info = inspectElf(elf);
    if (info.x86_64 && info.pvh) return elf;
    problems.push(`offset ${at}: not a PVH-bootable x86-64 ELF`);
  }
  throw new AssetError(
    "kernel_invalid",
    "Cannot extract the kernel ELF from vmlinuz: " +
      (candidates.length === 0
        ? "no xz stream found (is it an xz-compressed bzImage?)"
        : problems.join("; ")),
  );
}

/** A host kernel package's files. */
export interface HostKernel {
  /** Kernel release, e.g. `6.1.0-56-amd64`. */
  release: string;
  /** Path of the compressed kernel image. */
  vmlinuz: string;
  /** Its module folder, `/lib/modules/<release>`. */
  modulesDir: string;
}

/** Compares dotted/dashed version strings numerically where both parts are numbers. */
export function compareReleases(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isInteger(nx) && Number.isInteger(ny) && x !== "" && y !== ""
      ? nx - ny
      : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * Finds the newest `vmlinuz-*` in `bootDir` that has a matching module folder under
 * `modulesRoot` (from Debian's `linux-image-amd64` or `linux-image-arm64`, or an unpacked one).
 */
export async function findHostKernel(
  bootDir = "/boot",
  modulesRoot = "/lib/modules",
): Promise<HostKernel> {
  let names: string[] = [];
  try {
    names = await readdir(bootDir);
  } catch { /* reported below */ }
  const releases = names.filter((n) => n.startsWith("vmlinuz-")).map((n) => n.slice(8))
    .sort(compareReleases).reverse();
  for (const release of releases) {
    const modulesDir = join(modulesRoot, release);
    try {
      await Deno.stat(join(modulesDir, "modules.dep"));
    } catch {
      continue;
    }
    return { release, vmlinuz: join(bootDir, `vmlinuz-${release}`), modulesDir };
  }
  const pkg = ARCH_SPECS[hostArch()].kernelPackage;
  throw new AssetError(
    "kernel_not_found",
    `Cannot find a kernel: no ${bootDir}/vmlinuz-* with modules in ${modulesRoot}; ` +
      `install one with: apt-get install ${pkg}`,
    { packages: [pkg] },
  );
}

/** Offset and value of the arm64 `Image` header's magic ("ARM\x64", little-endian). */
const ARM64_MAGIC_OFFSET = 0x38;
const ARM64_MAGIC = 0x644d5241;

/** `true` when `image` is an arm64 Linux `Image` (its header's magic at offset 0x38). */
export function isArm64Image(image: Uint8Array): boolean {
  if (image.length < ARM64_MAGIC_OFFSET + 4) return false;
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  return view.getUint32(ARM64_MAGIC_OFFSET, true) === ARM64_MAGIC;
}

/**
 * Returns the arm64 `Image` in `vmlinuz`: Debian ships it uncompressed; a gzip'd one (other
 * distributions) is decompressed. Throws {@linkcode AssetError} `kernel_invalid` otherwise.
 */
export async function arm64Image(vmlinuz: Uint8Array): Promise<Uint8Array> {
  let image = vmlinuz;
  if (vmlinuz[0] === 0x1f && vmlinuz[1] === 0x8b) {
    const stream = new Blob([vmlinuz as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    image = await new Response(stream).bytes();
  }
  if (!isArm64Image(image)) {
    throw new AssetError(
      "kernel_invalid",
      "Cannot use the kernel: not an arm64 Image (no ARM\\x64 magic at offset 0x38)",
    );
  }
  return image;
}

/**
 * Unpacks kernel package `deb` under `dest` and indexes its modules (`depmod -b`, which the
 * package's own scripts would do on a real install), so {@linkcode findHostKernel} finds it there.
 */
export async function unpackKernelPackage(deb: string, dest: string): Promise<HostKernel> {
  await runTool("dpkg-deb", ["-x", deb, dest]);
  const boot = join(dest, "boot");
  const modulesRoot = join(dest, "lib", "modules");
  const releases = (await readdir(modulesRoot).catch(() => [] as string[])).sort(compareReleases);
  const release = releases.at(-1);
  if (!release) {
    throw new AssetError("kernel_invalid", `Cannot find kernel modules in ${deb}`);
  }
  await runTool("depmod", ["-b", dest, release]);
  return await findHostKernel(boot, modulesRoot);
}
