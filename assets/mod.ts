/**
 * Guest assets: the kernel, the initramfs and the root filesystem image a shuru VM boots.
 *
 * {@linkcode ensureAssets} returns the current assets, building them when missing or stale.
 * They live in `<assets>/<version>/`, where the version hashes everything that goes in: the
 * Debian recipe, the host kernel, busybox, Deno, the agent bundle and the init scripts. A
 * build happens in a temporary folder renamed into place at the end, so a folder that exists
 * is complete. The mmdebstrap tarball is cached separately (`<assets>/cache/`), keyed by the
 * recipe alone, so an agent change only re-runs the quick steps.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AssetError } from "./errors.ts";
import { extractKernel, findHostKernel, type HostKernel } from "./kernel.ts";
import { type LoadableModule, loadModules, MODULE_GROUPS, type ModuleGroup } from "./modules.ts";
import { buildInitramfs, groupModules, initScript } from "./initramfs.ts";
import {
  addShuruFiles,
  DEBIAN_RECIPE,
  DEFAULT_FS_BYTES,
  guestInitScript,
  imageBytesFor,
  makeExt4,
  MKFS_OPTIONS,
  mmdebstrapArgs,
  treeBytes,
} from "./rootfs.ts";
import {
  ASSET_TOOLS,
  findCommand,
  findMissingTools,
  installPackages,
  type MissingPackage,
  missingPackagesError,
  NON_ROOT_TOOLS,
  packagesOf,
  VM_TOOLS,
} from "../host/mod.ts";
import { type AsRoot, asRoot } from "./as_root.ts";
import { PRIMING_VERSION } from "./deno_cache.ts";
import { runTool } from "./run.ts";
import {
  buildToolsTree,
  makeToolsImage,
  TOOLS_MKFS_OPTIONS,
  toolsAgentRunScript,
  toolsInitScript,
} from "./tools.ts";

export { AssetError, type AssetErrorCode } from "./errors.ts";
export { runTool, type RunToolOptions } from "./run.ts";
export { checkInitrd, checkKernel, type CheckKernelOptions, checkRootfs } from "./boot_files.ts";
export { DEBIAN_RECIPE, type DebianRecipe } from "./rootfs.ts";
export { MODULE_GROUPS, type ModuleGroup } from "./modules.ts";
export { GUEST_AGENT_PATH, TOOLS_BUSYBOX, toolsCommand } from "./tools.ts";
export { TOOLS_MOUNT } from "./guest_paths.ts";
export {
  BUNDLE_MANIFEST,
  BundleError,
  type BundleErrorCode,
  type BundleFile,
  type BundleManifest,
  parseBundleManifest,
  unpackBundle,
  type UnpackOptions,
  writeBundle,
  type WrittenBundle,
} from "./bundle.ts";

/**
 * Bumped when the layout or meaning of the asset files changes. 2: the agent, Deno and the
 * guest's init moved from the root filesystem to the tools disk (`tools.ext4`).
 */
export const ASSET_FORMAT = 2;

/** Paths of one complete set of guest assets. */
export interface GuestAssets {
  /** Version folder name (format and content hash). */
  version: string;
  /** The version folder. */
  dir: string;
  /** Uncompressed kernel ELF (PVH entry). */
  kernel: string;
  /** gzip-compressed newc initramfs. */
  initramfs: string;
  /** ext4 root filesystem image (read-only base; runs write to a copy-on-write layer). */
  rootfs: string;
  /** The tools disk (read-only ext4): agent, Deno and its libraries, busybox, tini. */
  tools: string;
  /** Size of the root filesystem image in bytes: the smallest disk a VM can use. */
  rootfsBytes: number;
  /** Kernel release the kernel and modules come from. */
  kernelRelease: string;
  /** `true` when this call built them; `false` when they were already current. */
  built: boolean;
  /** `false` only with `checkOnly` when the assets are not built yet. */
  present: boolean;
  /** Milliseconds per build step (empty when nothing was built). */
  timings: Record<string, number>;
}

/** Progress of {@linkcode ensureAssets}, for display. */
export type AssetProgress =
  | { kind: "start"; step: AssetStep; label: string }
  | { kind: "detail"; step: AssetStep; text: string; fraction?: number }
  | { kind: "done"; step: AssetStep; elapsedMs: number; note?: string };

/** The steps of a build, in order. */
export type AssetStep =
  | "host-tools"
  | "agent"
  | "kernel"
  | "initramfs"
  | "tools"
  | "debian"
  | "rootfs-tree"
  | "rootfs-image"
  | "install";

/** Options of {@linkcode ensureAssets}. */
export interface EnsureAssetsOptions {
  /** The assets folder, e.g. `homeLayout().assets`. */
  assetsDir: string;
  /** Rebuild even when current (the Debian tarball cache is rebuilt too). */
  force?: boolean;
  /** Install missing host tools with apt-get (root on Debian/Ubuntu only). */
  installDeps?: boolean;
  /** Progress callback. */
  onProgress?: (event: AssetProgress) => void;
  /** The guest agent's entry module (default: `guest/main.ts` of this checkout). */
  agentEntry?: string;
  /** The Deno binary copied into the guest (default: the running one). */
  denoBinary?: string;
  /** PATH to find host tools in (default: empty, meaning the standard folders only). */
  path?: string;
  /** Folder with `vmlinuz-*` (default `/boot`). */
  bootDir?: string;
  /** Folder with module trees (default `/lib/modules`). */
  modulesRoot?: string;
  /** Only compute the current version and whether it is built; never build. */
  checkOnly?: boolean;
}

const DEFAULT_AGENT_ENTRY = fileURLToPath(new URL("../guest/main.ts", import.meta.url));

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fileStamp(path: string): Promise<string> {
  const info = await Deno.stat(path);
  return `${path}:${info.size}:${info.mtime?.getTime() ?? 0}`;
}

/** Runs one step with start/done events and records its time. */
async function step<T>(
  name: AssetStep,
  label: string,
  timings: Record<string, number>,
  onProgress: (e: AssetProgress) => void,
  body: (detail: (text: string, fraction?: number) => void) => Promise<T>,
  note?: (result: T) => string,
): Promise<T> {
  const started = performance.now();
  onProgress({ kind: "start", step: name, label });
  const result = await body((text, fraction) =>
    onProgress({ kind: "detail", step: name, text, fraction })
  );
  const elapsedMs = Math.round(performance.now() - started);
  timings[name] = elapsedMs;
  onProgress({ kind: "done", step: name, elapsedMs, note: note?.(result) });
  return result;
}

/** Bundles the agent into one JavaScript file with `deno bundle`. */
export async function bundleAgent(denoBinary: string, entry: string): Promise<Uint8Array> {
  try {
    await Deno.stat(entry);
  } catch (err) {
    throw new AssetError(
      "agent_not_found",
      `Cannot bundle the guest agent: ${entry} does not exist`,
      { cause: err },
    );
  }
  const tmp = await Deno.makeTempDir({ prefix: "shuru-agent-" });
  try {
    const out = join(tmp, "agent.js");
    // cwd = the entry's folder: the bundle's path comments then do not depend on where we run.
    await runTool(denoBinary, ["bundle", "--quiet", "--platform", "deno", "-o", out, entry], {
      cwd: dirname(entry),
    });
    return await Deno.readFile(out);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** The stamp file of one agent entry (tests and the product use different entries). */
async function agentStampPath(assetsDir: string, entry: string): Promise<string> {
  return join(assetsDir, `agent-stamp-${(await sha256Hex(entry)).slice(0, 12)}.json`);
}

interface AgentStamp {
  entry: string;
  deno: string;
  files: Record<string, string>;
  sha: string;
}

async function statStamp(path: string): Promise<string> {
  const info = await Deno.stat(path);
  return `${info.size}:${info.mtime?.getTime() ?? 0}`;
}

/** The local files of the agent's module graph, from `deno info --json`. */
async function agentSourceFiles(denoBinary: string, entry: string): Promise<string[]> {
  const out = await runTool(denoBinary, ["info", "--json", entry], { cwd: dirname(entry) });
  const graph = JSON.parse(new TextDecoder().decode(out));
  const files: string[] = [];
  for (const m of graph?.modules ?? []) if (typeof m?.local === "string") files.push(m.local);
  return files;
}

/** Returns the bundle hash recorded for `entry` when no source file changed since. */
async function readAgentStamp(
  assetsDir: string,
  entry: string,
  denoBinary: string,
): Promise<string | undefined> {
  try {
    const path = await agentStampPath(assetsDir, entry);
    const stamp: AgentStamp = JSON.parse(await Deno.readTextFile(path));
    if (stamp.entry !== entry || stamp.deno !== (await statStamp(denoBinary))) return undefined;
    const files = Object.entries(stamp.files);
    if (files.length === 0) return undefined;
    for (const [file, want] of files) {
      if ((await statStamp(file)) !== want) return undefined;
    }
    return stamp.sha;
  } catch {
    return undefined;
  }
}

async function writeAgentStamp(
  assetsDir: string,
  entry: string,
  denoBinary: string,
  sha: string,
): Promise<void> {
  const files: Record<string, string> = {};
  for (const file of await agentSourceFiles(denoBinary, entry)) files[file] = await statStamp(file);
  const stamp: AgentStamp = { entry, deno: await statStamp(denoBinary), files, sha };
  await Deno.mkdir(assetsDir, { recursive: true });
  const path = await agentStampPath(assetsDir, entry);
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(stamp) + "\n");
  await Deno.rename(tmp, path);
}

/**
 * Returns the current guest assets, building them first when missing, stale or `force`d.
 * Throws {@linkcode AssetError}: `missing_host_tools` names the apt-get line to run.
 */
export async function ensureAssets(options: EnsureAssetsOptions): Promise<GuestAssets> {
  const onProgress = options.onProgress ?? (() => {});
  const timings: Record<string, number> = {};
  const path = options.path ?? "";
  const denoBinary = options.denoBinary ?? Deno.execPath();
  const agentEntry = options.agentEntry ?? DEFAULT_AGENT_ENTRY;

  // Everything the host lacks (programs, the kernel) at once, so one command installs it all.
  const missingPackages = async (): Promise<MissingPackage[]> => {
    const tools = [...ASSET_TOOLS, ...VM_TOOLS, ...(Deno.uid() === 0 ? [] : NON_ROOT_TOOLS)];
    const missing = packagesOf(await findMissingTools(tools, path));
    await findHostKernel(options.bootDir, options.modulesRoot).catch((err) => {
      if (!(err instanceof AssetError) || err.code !== "kernel_not_found") throw err;
      for (const p of err.packages) missing.push({ package: p, what: `a kernel (${p})` });
    });
    return missing;
  };
  await step("host-tools", "checking host tools", timings, onProgress, async (detail) => {
    if (options.checkOnly) return;
    let missing = await missingPackages();
    if (missing.length === 0) return;
    if (!options.installDeps) throw missingPackagesError(missing);
    const log = await installPackages(missing.map((m) => m.package), { onProgress: detail });
    missing = await missingPackages();
    if (missing.length > 0) throw missingPackagesError(missing);
    detail(`installed (apt's log: ${log})`);
  });
  const kernel = await findHostKernel(options.bootDir, options.modulesRoot);
  // The agent's sources are stamped (sizes and mtimes of every module it imports), so a
  // current set of assets is found without running `deno bundle` (which costs 50-150 ms).
  let agentBundle: Uint8Array | undefined;
  let agentSha = options.force
    ? undefined
    : await readAgentStamp(options.assetsDir, agentEntry, denoBinary);
  const bundleNow = async () => {
    agentBundle = await step(
      "agent",
      "bundling the guest agent",
      timings,
      onProgress,
      () => bundleAgent(denoBinary, agentEntry),
      (b) => `${(b.length / 1024).toFixed(0)} KiB`,
    );
    agentSha = await sha256Hex(agentBundle);
    await writeAgentStamp(options.assetsDir, agentEntry, denoBinary, agentSha).catch(() => {});
  };
  if (!agentSha) await bundleNow();

  const busybox = findCommand("busybox", path) as string;
  const tini = findCommand("tini-static", path) as string;
  const versionOf = (sha: string) =>
    assetVersion(options.assetsDir, { kernel, busybox, tini, denoBinary, agentSha: sha });
  let { version, dir, recipeKey, rootfsKey } = await versionOf(agentSha!);
  const assets = (built: boolean, rootfsBytes: number, present = true): GuestAssets => ({
    version,
    dir,
    kernel: join(dir, "vmlinux"),
    initramfs: join(dir, "initramfs.img"),
    rootfs: join(dir, "rootfs.ext4"),
    tools: join(dir, "tools.ext4"),
    rootfsBytes,
    kernelRelease: kernel.release,
    built,
    present,
    timings,
  });

  if (!options.force || options.checkOnly) {
    const existing = await readManifest(dir);
    if (existing) return assets(false, existing.rootfsBytes);
    if (options.checkOnly) return assets(false, 0, false);
  }
  // Building: first make sure files can get their owners (as root, or a user namespace).
  const root = await asRoot();
  if (!agentBundle) {
    // Building: use a fresh bundle (and its version, should the stamp have missed a change).
    await bundleNow();
    ({ version, dir, recipeKey, rootfsKey } = await versionOf(agentSha!));
  }
  const rootfsBytes = await build({
    ...options,
    root,
    dir,
    kernel,
    busybox,
    tini,
    denoBinary,
    agentBundle: agentBundle!,
    recipeKey,
    rootfsKey,
    timings,
    onProgress,
  });
  return assets(true, rootfsBytes);
}

/** The inputs that decide the asset version. */
interface VersionInputs {
  kernel: HostKernel;
  busybox: string;
  tini: string;
  denoBinary: string;
  agentSha: string;
}

/** Size and version of a Deno binary: the same release gives the same identity anywhere. */
async function denoIdentity(binary: string): Promise<string> {
  const { size } = await Deno.stat(binary);
  if (binary === Deno.execPath()) return `${size}:${Deno.version.deno}`;
  const out = await runTool(binary, ["--version"], {});
  return `${size}:${new TextDecoder().decode(out).split("\n")[0]}`;
}

async function assetVersion(
  assetsDir: string,
  inputs: VersionInputs,
): Promise<{ version: string; dir: string; recipeKey: string; rootfsKey: string }> {
  const recipeKey = await recipeKeyOf();
  // The Debian image depends on the recipe and a few files only (not on the agent), so every
  // version with the same key shares one rootfs.ext4 (a hard link: one inode, one base cache).
  const rootfsKey = (await sha256Hex(JSON.stringify({
    format: ASSET_FORMAT,
    recipeKey,
    init: guestInitScript(),
    image: { minBytes: DEFAULT_FS_BYTES, mkfs: MKFS_OPTIONS },
  }))).slice(0, 16);
  const loader = await Deno.realPath("/lib64/ld-linux-x86-64.so.2").catch(() => "");
  const versionKey = await sha256Hex(JSON.stringify({
    format: ASSET_FORMAT,
    rootfsKey,
    modules: MODULE_GROUPS,
    kernel: await fileStamp(inputs.kernel.vmlinuz),
    modulesDep: await fileStamp(join(inputs.kernel.modulesDir, "modules.dep")),
    busybox: await fileStamp(inputs.busybox),
    tini: await fileStamp(inputs.tini),
    // The tools disk copies the host's loader and libc (and setpriv, resize2fs).
    libc: loader ? await fileStamp(loader) : "",
    // The Deno binary by content, not path: each checkout (a CI clone) has its own copy.
    deno: await denoIdentity(inputs.denoBinary),
    agent: inputs.agentSha,
    scripts: await sha256Hex(initScript([]) + toolsInitScript() + toolsAgentRunScript()),
    agentCache: PRIMING_VERSION,
    // Builder choices that change the files; code changes beyond these bump ASSET_FORMAT.
    tools: TOOLS_MKFS_OPTIONS,
  }));
  const version = `v${ASSET_FORMAT}-${versionKey.slice(0, 16)}`;
  return { version, dir: join(assetsDir, version), recipeKey, rootfsKey };
}

async function recipeKeyOf(): Promise<string> {
  return (await sha256Hex(JSON.stringify(DEBIAN_RECIPE))).slice(0, 16);
}

/** What {@linkcode pruneAssets} removed. */
export interface AssetPruneResult {
  /** Removed folders and files (names under the assets folder). */
  removed: string[];
  /** Bytes freed (apparent sizes). */
  bytes: number;
}

/** Age after which an unfinished build or download is considered abandoned. */
const STALE_BUILD_MS = 6 * 3600_000;

/**
 * Removes asset versions other than `keepVersion`, and abandoned partial builds. A running VM
 * keeps its open files, so removing a version in use does not disturb it.
 */
export async function pruneAssets(
  assetsDir: string,
  keepVersion: string,
): Promise<AssetPruneResult> {
  const result: AssetPruneResult = { removed: [], bytes: 0 };
  const remove = async (path: string, name: string) => {
    result.bytes += await treeBytes(path).catch(() => 0);
    await Deno.remove(path, { recursive: true });
    result.removed.push(name);
  };
  const stale = (info: Deno.FileInfo) => Date.now() - (info.mtime?.getTime() ?? 0) > STALE_BUILD_MS;
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(assetsDir));
  } catch {
    return result;
  }
  for (const e of entries) {
    const path = join(assetsDir, e.name);
    if (e.isDirectory && /^v\d+-[0-9a-f]+$/.test(e.name) && e.name !== keepVersion) {
      await remove(path, e.name);
    } else if (e.name.startsWith(".build-") && stale(await Deno.stat(path))) {
      await remove(path, e.name);
    }
  }
  const cache = join(assetsDir, "cache");
  const recipeKey = await recipeKeyOf();
  // Shared root filesystems that no kept version links to any more (one link: the cache's).
  const cached = await Array.fromAsync(Deno.readDir(cache)).catch(() => [] as Deno.DirEntry[]);
  for (const e of cached) {
    const path = join(cache, e.name);
    const oldRecipe = e.name.endsWith(".tar") && !e.name.includes(recipeKey);
    const unusedRootfs = /^rootfs-[0-9a-f]+\.ext4$/.test(e.name) &&
      (await Deno.stat(path)).nlink === 1;
    if (
      oldRecipe || unusedRootfs ||
      (e.name.includes(".partial-") && stale(await Deno.stat(path)))
    ) {
      await remove(path, `cache/${e.name}`);
    }
  }
  return result;
}

interface Manifest {
  format: number;
  rootfsBytes: number;
  kernelRelease: string;
  builtAt: string;
  timings: Record<string, number>;
}

async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    const manifest = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    if (manifest?.format === ASSET_FORMAT && typeof manifest.rootfsBytes === "number") {
      return manifest as Manifest;
    }
  } catch {
    // missing or unreadable: not current
  }
  return undefined;
}

interface BuildInputs extends EnsureAssetsOptions {
  dir: string;
  kernel: HostKernel;
  busybox: string;
  tini: string;
  denoBinary: string;
  agentBundle: Uint8Array;
  recipeKey: string;
  rootfsKey: string;
  timings: Record<string, number>;
  onProgress: (event: AssetProgress) => void;
  /** How commands run as root: the real root, or a user namespace (as_root.ts). */
  root: AsRoot;
}

const MIB = 1024 * 1024;

async function build(inp: BuildInputs): Promise<number> {
  const { timings, onProgress, root } = inp;
  await Deno.mkdir(inp.assetsDir, { recursive: true });
  const work = await Deno.makeTempDir({ dir: inp.assetsDir, prefix: ".build-" });
  try {
    await step(
      "kernel",
      `extracting the kernel from ${inp.kernel.vmlinuz}`,
      timings,
      onProgress,
      async () => {
        const elf = await extractKernel(await Deno.readFile(inp.kernel.vmlinuz));
        await Deno.writeFile(join(work, "vmlinux"), elf);
        return elf.length;
      },
      (n) => `${(n / MIB).toFixed(1)} MiB ELF`,
    );

    await step(
      "initramfs",
      "building the initramfs (busybox + kernel modules)",
      timings,
      onProgress,
      async () => {
        const resolved = new Map<ModuleGroup, LoadableModule[]>();
        for (const group of Object.keys(MODULE_GROUPS) as ModuleGroup[]) {
          resolved.set(group, await loadModules(inp.kernel.modulesDir, MODULE_GROUPS[group]));
        }
        const groups = groupModules(resolved);
        const image = await buildInitramfs(
          await Deno.readFile(inp.busybox),
          groups,
          inp.kernel.release,
        );
        await Deno.writeFile(join(work, "initramfs.img"), image);
        return { bytes: image.length, modules: groups.reduce((n, g) => n + g.modules.length, 0) };
      },
      (r) => `${r.modules} modules, ${(r.bytes / MIB).toFixed(1)} MiB`,
    );

    await step(
      "tools",
      "building the tools disk (agent, Deno, busybox, tini)",
      timings,
      onProgress,
      async () => {
        const tree = await buildToolsTree(join(work, "tools-root"), {
          denoBinary: inp.denoBinary,
          agentBundle: inp.agentBundle,
          busybox: inp.busybox,
          tini: inp.tini,
          ...(inp.path ? { path: inp.path } : {}),
        });
        const bytes = await makeToolsImage(tree, join(work, "tools.ext4"), { root });
        await Deno.remove(join(work, "tools-root"), { recursive: true });
        return bytes;
      },
      (n) => `${(n / MIB).toFixed(0)} MiB image`,
    );

    // The Debian image is shared by every version with the same rootfs key.
    const sharedRootfs = join(inp.assetsDir, "cache", `rootfs-${inp.rootfsKey}.ext4`);
    if (!inp.force) {
      const reused = await Deno.link(sharedRootfs, join(work, "rootfs.ext4")).then(
        () => true,
        () => false,
      );
      if (reused) {
        const imageBytes = (await Deno.stat(sharedRootfs)).size;
        await install(inp, work, imageBytes);
        return imageBytes;
      }
    }

    const tarball = await step(
      "debian",
      "Debian base (mmdebstrap)",
      timings,
      onProgress,
      async (detail) => {
        const cacheDir = join(inp.assetsDir, "cache");
        const tar = join(cacheDir, `debian-${DEBIAN_RECIPE.suite}-${inp.recipeKey}.tar`);
        if (!inp.force) {
          try {
            await Deno.stat(tar);
            detail("cached");
            return { tar, cached: true };
          } catch { /* build it */ }
        }
        await Deno.mkdir(cacheDir, { recursive: true });
        const partial = `${tar}.partial-${Deno.pid}`;
        try {
          let lastLine = "";
          // Without root, mmdebstrap builds in a user namespace of its own (--mode=unshare).
          const mode = root.real ? [] : ["--mode=unshare"];
          await runTool("mmdebstrap", [...mode, ...mmdebstrapArgs(DEBIAN_RECIPE, partial)], {
            onStderr: (text) => {
              for (const line of (lastLine + text).split("\n").slice(0, -1)) {
                if (line.trim()) detail(line.trim());
              }
              lastLine = (lastLine + text).split("\n").pop() ?? "";
            },
          });
          await Deno.rename(partial, tar);
        } finally {
          await Deno.remove(partial).catch(() => {});
        }
        return { tar, cached: false };
      },
      (r) => (r.cached ? "cached " : "") + basename(r.tar),
    );

    const tree = join(work, "root");
    const contentBytes = await step(
      "rootfs-tree",
      "assembling the root filesystem",
      timings,
      onProgress,
      async (detail) => {
        await Deno.mkdir(tree);
        // tar reports every 1000 records (10 KiB each); the tarball's size gives the fraction.
        const tarBytes = (await Deno.stat(tarball.tar)).size;
        await root.run("tar", [
          "-xpf",
          tarball.tar,
          "-C",
          tree,
          "--numeric-owner",
          "--xattrs",
          "--xattrs-include=*",
          "--checkpoint=1000",
          "--checkpoint-action=echo=%u",
          // A user namespace cannot make device nodes; the guest mounts devtmpfs on /dev.
          ...(root.real ? [] : ["--exclude=./dev/*"]),
        ], {
          onStderr: (text) => {
            const records = Number(/(\d+)\s*$/.exec(text.trim())?.[1]);
            if (records > 0) {
              const fraction = Math.min(1, (records * 10240) / tarBytes);
              detail("unpacking the Debian base", fraction);
            }
          },
        });
        await addShuruFiles(tree);
        return await treeBytes(tree, root);
      },
      (n) => `${(n / MIB).toFixed(0)} MiB of files`,
    );

    const imageBytes = imageBytesFor(contentBytes);
    await step(
      "rootfs-image",
      "writing rootfs.ext4 (mkfs.ext4 -d)",
      timings,
      onProgress,
      async () => {
        await makeExt4(tree, join(work, "rootfs.ext4"), { bytes: imageBytes, root });
        await root.run("rm", ["-rf", tree]);
        await Deno.mkdir(join(inp.assetsDir, "cache"), { recursive: true });
        await Deno.remove(sharedRootfs).catch(() => {});
        await Deno.link(join(work, "rootfs.ext4"), sharedRootfs);
      },
      () => `${(imageBytes / MIB).toFixed(0)} MiB image`,
    );
    await install(inp, work, imageBytes);
    return imageBytes;
  } finally {
    // The tree holds files of other owners (the namespace's): remove it as their root.
    await root.run("rm", ["-rf", work]).catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Writes the manifest and renames the build folder into place. */
async function install(inp: BuildInputs, work: string, imageBytes: number): Promise<void> {
  const { timings, onProgress } = inp;
  await step("install", "installing the assets", timings, onProgress, async () => {
    const manifest: Manifest = {
      format: ASSET_FORMAT,
      rootfsBytes: imageBytes,
      kernelRelease: inp.kernel.release,
      builtAt: new Date().toISOString(),
      timings,
    };
    await Deno.writeTextFile(
      join(work, "manifest.json"),
      JSON.stringify(manifest, null, 2) + "\n",
    );
    // makeTempDir creates 0700; the assets are read by every user of this data home.
    await Deno.chmod(work, 0o755);
    // Replace an existing (forced) version: move it aside first, then rename ours in.
    const old = `${inp.dir}.old-${Deno.pid}`;
    const hadOld = await Deno.rename(inp.dir, old).then(() => true, () => false);
    try {
      await Deno.rename(work, inp.dir);
    } catch (err) {
      // Another build finished first with the same version: theirs is as good as ours.
      if (!(await readManifest(inp.dir))) throw err;
    }
    if (hadOld) await Deno.remove(old, { recursive: true });
  });
}
