/**
 * Kernel modules for the initramfs: resolve names through `modules.dep` into a load order,
 * read (and decompress) the `.ko` files, strip their signatures.
 *
 * Debian builds virtio, ext4 and 9p as modules, so the initramfs must `insmod` them, each
 * after its dependencies.
 *
 * @module
 */

import { basename, join } from "node:path";
import { AssetError } from "./errors.ts";
import { runTool } from "./run.ts";

/** Modules the initramfs loads, by group. Order inside a group does not matter. */
export const MODULE_GROUPS: Readonly<Record<ModuleGroup, readonly string[]>> = {
  // Root and tools disks (virtio-blk), the agent's port and the console (virtio_console: also
  // `hvc0`, VZ's console), ext4. ext4 needs a crc32c implementation but does not depend on one
  // in modules.dep.
  base: ["virtio_blk", "virtio_console", "crc32c_generic", "ext4"],
  // The virtio transport, one of the two (the kernel command line names it): memory-mapped
  // (QEMU's microvm and virt machines) or PCI (Virtualization.framework).
  mmio: ["virtio_mmio"],
  pci: ["virtio_pci"],
  // Host folders: virtio-9p (QEMU) or virtio-fs (Virtualization.framework).
  "9p": ["9pnet_virtio", "9p"],
  virtiofs: ["virtiofs"],
  // Overlay filesystem (for read-only mounts with a writable layer).
  overlay: ["overlay"],
  // Network device (virtio-net); af_packet for raw sockets (built in on Debian).
  net: ["virtio_net", "af_packet"],
};

/** A named set of modules the guest can be asked to load (kernel cmdline `shuru.modules=`). */
export type ModuleGroup = "base" | "mmio" | "pci" | "9p" | "virtiofs" | "overlay" | "net";

/** Module name of a path: `kernel/fs/ext4/ext4.ko.xz` → `ext4`; dashes become underscores. */
export function moduleName(path: string): string {
  return basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/** Parsed `modules.dep`: module name → path and dependency paths (relative). */
export interface ModuleIndex {
  /** name → relative path of the `.ko` file. */
  paths: Map<string, string>;
  /** relative path → relative paths it depends on. */
  deps: Map<string, string[]>;
}

/** Parses the text of `modules.dep` (`path: dep dep ...` per line). */
export function parseModulesDep(text: string): ModuleIndex {
  const paths = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    paths.set(moduleName(path), path);
    deps.set(path, rest === "" ? [] : rest.split(/\s+/));
  }
  return { paths, deps };
}

/** Parses `modules.builtin` into the set of built-in module names. */
export function parseBuiltin(text: string): Set<string> {
  return new Set(text.split("\n").filter((l) => l.trim() !== "").map(moduleName));
}

/**
 * Returns the relative paths of `names` and everything they depend on, each after its
 * dependencies, without duplicates. Built-in names are skipped; unknown names throw
 * {@linkcode AssetError} `module_not_found`.
 */
export function resolveModules(
  index: ModuleIndex,
  names: readonly string[],
  builtin: ReadonlySet<string> = new Set(),
): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (path: string, chain: string[]) => {
    if (done.has(path)) return;
    if (visiting.has(path)) {
      throw new AssetError(
        "module_not_found",
        `Cannot order kernel modules: dependency cycle ${[...chain, path].join(" -> ")}`,
      );
    }
    visiting.add(path);
    for (const dep of index.deps.get(path) ?? []) visit(dep, [...chain, path]);
    visiting.delete(path);
    done.add(path);
    order.push(path);
  };
  for (const raw of names) {
    const name = raw.replaceAll("-", "_");
    const path = index.paths.get(name);
    if (path === undefined) {
      if (builtin.has(name)) continue;
      throw new AssetError(
        "module_not_found",
        `Cannot find kernel module ${raw}: not in modules.dep nor built in`,
      );
    }
    visit(path, []);
  }
  return order;
}

const SIGNATURE_MARKER = new TextEncoder().encode("~Module signature appended~\n");
/** `struct module_signature`: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (BE). */
const SIGNATURE_INFO_SIZE = 12;

/**
 * Returns the module without its appended signature (or unchanged when unsigned).
 * Checking the signature costs a large share of module load time under TCG, and the kernel
 * does not enforce signatures unless booted in lockdown.
 */
export function stripModuleSignature(ko: Uint8Array): Uint8Array {
  const m = SIGNATURE_MARKER.length;
  if (ko.length < m + SIGNATURE_INFO_SIZE) return ko;
  for (let i = 0; i < m; i++) {
    if (ko[ko.length - m + i] !== SIGNATURE_MARKER[i]) return ko;
  }
  const info = ko.length - m - SIGNATURE_INFO_SIZE;
  const sigLen = new DataView(ko.buffer, ko.byteOffset + info + 8, 4).getUint32(0, false);
  if (sigLen > info) return ko;
  return ko.subarray(0, info - sigLen);
}

/** Reads a module file, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` with the host tools. */
export async function readModule(modulesDir: string, relPath: string): Promise<Uint8Array> {
  const path = join(modulesDir, relPath);
  if (relPath.endsWith(".ko")) return await Deno.readFile(path);
  const tool = relPath.endsWith(".xz") ? "xz" : relPath.endsWith(".zst") ? "zstd" : "gzip";
  return await runTool(tool, ["-dc", path]);
}

/** One module ready for the initramfs. */
export interface LoadableModule {
  /** Module name (file name in the initramfs is `<name>.ko`). */
  name: string;
  /** Uncompressed, unsigned module bytes. */
  data: Uint8Array;
}

/**
 * Resolves `names` in `modulesDir` and returns the modules in load order, ready to insmod.
 */
export async function loadModules(
  modulesDir: string,
  names: readonly string[],
): Promise<LoadableModule[]> {
  const index = parseModulesDep(await Deno.readTextFile(join(modulesDir, "modules.dep")));
  let builtin = new Set<string>();
  try {
    builtin = parseBuiltin(await Deno.readTextFile(join(modulesDir, "modules.builtin")));
  } catch { /* no built-in list: every name must be a module */ }
  const order = resolveModules(index, names, builtin);
  const out: LoadableModule[] = [];
  for (const rel of order) {
    out.push({
      name: moduleName(rel),
      data: stripModuleSignature(await readModule(modulesDir, rel)),
    });
  }
  return out;
}
