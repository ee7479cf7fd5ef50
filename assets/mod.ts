/**
 * Guest assets: the kernel, the initramfs, the root filesystem image and the tools disk a shuru
 * VM boots.
 *
 * {@linkcode ensureAssets} returns the current assets of one guest architecture, building them
 * when missing or stale. They live in `<assets>/v<format>-<arch>-<hash>/`, where the hash covers
 * everything that goes in: the Debian recipe, the kernel, busybox, Deno, the agent bundle, the
 * tools disk's programs and the init scripts. A build happens in a temporary folder renamed into
 * place at the end, so a folder that exists is complete. The mmdebstrap tarball is cached
 * separately (`<assets>/cache/`), keyed by the recipe and architecture alone, and so is the
 * root filesystem made from it (shared by every version with the same recipe), so an agent
 * change only re-runs the quick steps.
 *
 * The host's own architecture is built from the host's packages; a foreign one from packages of
 * that architecture fetched into the cache (`packages.ts`, `foreign.ts`), its tools disk from
 * its own Debian root filesystem's programs and libraries (`tools.ts`).
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AssetError } from "./errors.ts";
import { type AssetProgress, step } from "./progress.ts";
import { ASSET_FORMAT, type AssetsManifest, readManifest } from "./version_dir.ts";
import { readInstalledBundle } from "./install.ts";
import { arm64Image, extractKernel, findHostKernel, unpackKernelPackage } from "./kernel.ts";
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
  GUEST_ARCHES,
  type GuestArch,
  hostArch,
  installPackages,
  type MissingPackage,
  missingPackagesError,
  NON_ROOT_TOOLS,
  packagesOf,
  shouldInstallPackages,
  vmTools,
} from "../host/mod.ts";
import { ARCH_SPECS, type ArchSpec, foreignAssetTools } from "./arch.ts";
import { type DebFile, debMember, ForeignPackages } from "./packages.ts";
import {
  foreignDeno,
  foreignDenoPath,
  foreignExec,
  qemuUserProgram,
  runWithForeignExec,
} from "./foreign.ts";
import { type AsRoot, asRoot } from "./as_root.ts";
import { PRIMING_VERSION } from "./deno_cache.ts";
import { runTool } from "./run.ts";
import {
  buildToolsTree,
  debianToolsRoot,
  HOST_TOOLS_PROGRAMS,
  hostToolsRoot,
  makeToolsImage,
  TOOLS_MKFS_OPTIONS,
  toolsAgentRunScript,
  toolsInitScript,
  type ToolsRoot,
} from "./tools.ts";

export { AssetError, type AssetErrorCode } from "./errors.ts";
export { type AssetProgress, type AssetStep } from "./progress.ts";
export { ASSET_FORMAT, type AssetsManifest } from "./version_dir.ts";
export { runTool, type RunToolOptions } from "./run.ts";
export { checkInitrd, checkKernel, type CheckKernelOptions, checkRootfs } from "./boot_files.ts";
export { DEBIAN_RECIPE, type DebianRecipe } from "./rootfs.ts";
export { MODULE_GROUPS, type ModuleGroup } from "./modules.ts";
export { ARCH_SPECS, type ArchSpec, foreignAssetTools } from "./arch.ts";
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
export {
  BUNDLE_CONFIG_MEDIA_TYPE,
  BUNDLE_LAYER_MEDIA_TYPE,
  type PushedBundle,
  REGISTRY_PREFIX,
} from "./oci_bundle.ts";
export {
  exportBundle,
  type ExportBundleOptions,
  type ExportedBundle,
  forgetInstalledBundle,
  installBundle,
  type InstallBundleOptions,
  type InstallBundleResult,
  type InstalledBundle,
  installedBundleFile,
  parseBundleDigest,
  readInstalledBundle,
} from "./install.ts";

/** Paths of one complete set of guest assets. */
export interface GuestAssets {
  /** The guest architecture. */
  arch: GuestArch;
  /** Version folder name (format, architecture and content hash). */
  version: string;
  /** The version folder. */
  dir: string;
  /** The kernel: an uncompressed ELF (x86_64, PVH entry) or an arm64 `Image`. */
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

/** Options of {@linkcode ensureAssets}. */
export interface EnsureAssetsOptions {
  /** The assets folder, e.g. `homeLayout().assets`. */
  assetsDir: string;
  /** The guest architecture (default: the host's). */
  arch?: GuestArch;
  /**
   * Rebuild even when current (the Debian tarball cache is rebuilt too, and a foreign
   * architecture's packages are looked up again).
   */
  force?: boolean;
  /**
   * Install missing host tools with apt-get (Debian/Ubuntu, as root). Default: yes as root, so
   * the first `shuru run` on a fresh machine bootstraps itself; otherwise the error names the
   * one `sudo apt-get install` line.
   */
  installDeps?: boolean;
  /** Progress callback. */
  onProgress?: (event: AssetProgress) => void;
  /** The guest agent's entry module (default: `guest/main.ts` of this checkout). */
  agentEntry?: string;
  /**
   * The Deno binary copied into a guest of the host's architecture (default: the running one);
   * a foreign architecture gets the same Deno version from npm.
   */
  denoBinary?: string;
  /** PATH to find host tools in (default: empty, meaning the standard folders only). */
  path?: string;
  /** Folder with `vmlinuz-*` (default `/boot`). */
  bootDir?: string;
  /** Folder with module trees (default `/lib/modules`). */
  modulesRoot?: string;
  /** Only compute the current version and whether it is built; never build nor download. */
  checkOnly?: boolean;
  /**
   * Build (or find the built version) even when a bundle is installed for this architecture
   * (`shuru init` on Linux). By default an installed bundle is used as it is.
   */
  ignoreInstalledBundle?: boolean;
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
 * Where a build's inputs come from: the host's packages for its own architecture, packages of
 * the guest's architecture in the assets cache otherwise.
 */
interface Sources {
  spec: ArchSpec;
  /** Kernel release. */
  release: string;
  /** Identity of the kernel and its modules, for the version. */
  kernelId: string;
  /** Identity of busybox, for the version. */
  busyboxId: string;
  /** Identity of the tools disk's programs and libraries, for the version. */
  toolsId: string;
  /** The Deno binary that goes into the guest. */
  guestDeno: string;
  /** Unpacks what the build reads into `work` (a foreign kernel package). */
  prepare(work: string): Promise<{ vmlinuz: string; modulesDir: string; busybox: Uint8Array }>;
  /** `true` when the tools disk is made from the Debian base (a foreign architecture). */
  toolsFromDebian: boolean;
  /**
   * Where the tools disk's programs and libraries come from: the host, or the guest
   * architecture's Debian base (`tarball` gives it, built or cached), unpacked under `work`.
   */
  toolsRoot(work: string, tarball: () => Promise<string>): Promise<ToolsRoot>;
  /** Runs mmdebstrap with `args` (through qemu-user's binfmt for a foreign architecture). */
  mmdebstrap(args: string[], onStderr: (text: string) => void): Promise<void>;
}

/** The packages a foreign build downloads: the kernel (through its metapackage) and busybox. */
function foreignRequests(spec: ArchSpec): string[] {
  return [spec.kernelPackage, "busybox-static"];
}

async function nativeSources(
  spec: ArchSpec,
  options: EnsureAssetsOptions,
  path: string,
  guestDeno: string,
): Promise<Sources> {
  const kernel = await findHostKernel(options.bootDir, options.modulesRoot);
  const busybox = findCommand("busybox", path) as string;
  const tools = [
    spec.loader,
    ...Object.values(HOST_TOOLS_PROGRAMS).map((c) => findCommand(c, path)),
  ];
  const stamps = tools.map(async (p) =>
    p === undefined ? "" : await fileStamp(await Deno.realPath(p)).catch(() => "")
  );
  return {
    spec,
    release: kernel.release,
    kernelId: `${await fileStamp(kernel.vmlinuz)}|${await fileStamp(
      join(kernel.modulesDir, "modules.dep"),
    )}`,
    busyboxId: await fileStamp(busybox),
    // The tools disk copies the host's loader and libc, tini, setpriv and resize2fs.
    toolsId: (await Promise.all(stamps)).join("|"),
    guestDeno,
    prepare: async () => ({
      vmlinuz: kernel.vmlinuz,
      modulesDir: kernel.modulesDir,
      busybox: await Deno.readFile(busybox),
    }),
    toolsFromDebian: false,
    toolsRoot: () => Promise.resolve(hostToolsRoot(spec, path)),
    mmdebstrap: async (args, onStderr) => {
      await runTool("mmdebstrap", args, { onStderr });
    },
  };
}

/** The sources of a foreign build; `undefined` with `checkOnly` when not downloaded yet. */
async function foreignSources(
  spec: ArchSpec,
  options: EnsureAssetsOptions,
  path: string,
  timings: Record<string, number>,
  onProgress: (e: AssetProgress) => void,
): Promise<Sources | undefined> {
  const cache = join(options.assetsDir, "cache");
  const packages = new ForeignPackages({
    debianArch: spec.debian,
    dir: join(cache, `apt-${spec.arch}`),
  });
  const denoVersion = Deno.version.deno;
  let debs: DebFile[] | undefined;
  let guestDeno: string | undefined = options.denoBinary;
  if (options.checkOnly) {
    debs = await packages.recorded(foreignRequests(spec));
    guestDeno ??= foreignDenoPath(cache, spec, denoVersion);
    if (!debs || !(await Deno.stat(guestDeno).then(() => true, () => false))) return undefined;
  } else {
    const recorded = options.force ? undefined : await packages.recorded(foreignRequests(spec));
    const cachedDeno = guestDeno ?? foreignDenoPath(cache, spec, denoVersion);
    if (recorded && await Deno.stat(cachedDeno).then(() => true, () => false)) {
      debs = recorded;
      guestDeno = cachedDeno;
    } else {
      ({ debs, guestDeno } = await step(
        "packages",
        `fetching ${spec.arch} packages (kernel, busybox: apt; Deno ${denoVersion}: npm)`,
        timings,
        onProgress,
        async (detail) => ({
          debs: await packages.fetch(foreignRequests(spec), {
            refresh: options.force ?? false,
            onLine: (l) => detail(l),
          }),
          guestDeno: guestDeno ??
            await foreignDeno(cache, spec, { version: denoVersion, onLine: (l) => detail(l) }),
        }),
        (r) => r.debs.map((d) => basename(d.path)).join(", "),
      ));
    }
  }
  const [kernelDeb, busyboxDeb] = debs as [DebFile, DebFile];
  const release = kernelDeb.name.replace(/^linux-image-/, "");
  return {
    spec,
    release,
    kernelId: `${basename(kernelDeb.path)}:${kernelDeb.size}`,
    busyboxId: `${basename(busyboxDeb.path)}:${busyboxDeb.size}`,
    // The tools disk's programs and libraries come from the Debian base (the recipe's key).
    toolsId: `debian:${await recipeKeyOf(spec.arch)}`,
    guestDeno: guestDeno!,
    prepare: async (work) => {
      const unpacked = await unpackKernelPackage(kernelDeb.path, join(work, "kernel-package"));
      return {
        vmlinuz: unpacked.vmlinuz,
        modulesDir: unpacked.modulesDir,
        busybox: await debMember(busyboxDeb.path, "./bin/busybox"),
      };
    },
    toolsFromDebian: true,
    toolsRoot: async (work, tarball) =>
      debianToolsRoot(spec, await tarball(), join(work, "tools-source"), {
        qemuUser: qemuUserProgram(spec, path),
      }),
    mmdebstrap: async (args, onStderr) => {
      qemuUserProgram(spec, path);
      const exec = await foreignExec(spec);
      onStderr(
        exec.kind === "host-binfmt"
          ? `running ${spec.arch} maintainer scripts through the host's binfmt_misc\n`
          : `running ${spec.arch} maintainer scripts through a private binfmt_misc\n`,
      );
      await runWithForeignExec(exec, ["mmdebstrap", `--architectures=${spec.debian}`, ...args], {
        onStderr,
      });
    },
  };
}

/**
 * Returns the current guest assets of `options.arch` (default: the host's), building them first
 * when missing, stale or `force`d.
 *
 * @throws {HostError} `missing_host_tools` naming the one install line to run.
 * @throws {AssetError} when a build step fails.
 */
export async function ensureAssets(options: EnsureAssetsOptions): Promise<GuestAssets> {
  const onProgress = options.onProgress ?? (() => {});
  const timings: Record<string, number> = {};
  const path = options.path ?? "";
  const arch = options.arch ?? hostArch();
  const spec = ARCH_SPECS[arch];
  const installed = options.force || options.ignoreInstalledBundle
    ? undefined
    : await readInstalledBundle(options.assetsDir, arch);
  if (installed) {
    return {
      arch,
      version: installed.bundle.version,
      dir: installed.dir,
      kernel: join(installed.dir, spec.kernelFile),
      initramfs: join(installed.dir, "initramfs.img"),
      rootfs: join(installed.dir, "rootfs.ext4"),
      tools: join(installed.dir, "tools.ext4"),
      rootfsBytes: installed.manifest.rootfsBytes,
      kernelRelease: installed.manifest.kernelRelease,
      built: false,
      present: true,
      timings,
    };
  }
  if (!canBuildAssets()) {
    if (options.checkOnly) return notPresent(arch, timings);
    throw new AssetError(
      "not_installed",
      `Cannot find ${arch} guest assets: this host (${Deno.build.os}) cannot build them (that ` +
        `takes Debian's tools); make a bundle on Linux with \`shuru init --arch ${arch} --export ` +
        `FILE\` and install it here with \`shuru init --bundle FILE|URL --bundle-digest sha256:…\``,
    );
  }
  const native = arch === hostArch();
  // The bundler is the Deno running shuru (or the given one, for a guest of our architecture).
  const bundler = native ? options.denoBinary ?? Deno.execPath() : Deno.execPath();
  const agentEntry = options.agentEntry ?? DEFAULT_AGENT_ENTRY;

  // Everything the host lacks (programs, the kernel) at once, so one command installs it all.
  const missingPackages = async (): Promise<MissingPackage[]> => {
    const tools = [
      ...ASSET_TOOLS,
      ...vmTools(arch),
      ...(native ? [] : foreignAssetTools(arch)),
      ...(Deno.uid() === 0 ? [] : NON_ROOT_TOOLS),
    ];
    const missing = packagesOf(await findMissingTools(tools, path));
    if (!native) return missing;
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
    if (!shouldInstallPackages(options.installDeps, Deno.uid())) {
      throw missingPackagesError(missing);
    }
    const log = await installPackages(missing.map((m) => m.package), { onProgress: detail });
    missing = await missingPackages();
    if (missing.length > 0) throw missingPackagesError(missing);
    detail(`installed (apt's log: ${log})`);
  });
  const sources = native
    ? await nativeSources(spec, options, path, options.denoBinary ?? Deno.execPath())
    : await foreignSources(spec, options, path, timings, onProgress);
  if (!sources) return notPresent(arch, timings);
  // The agent's sources are stamped (sizes and mtimes of every module it imports), so a
  // current set of assets is found without running `deno bundle` (which costs 50-150 ms).
  let agentBundle: Uint8Array | undefined;
  let agentSha = options.force
    ? undefined
    : await readAgentStamp(options.assetsDir, agentEntry, bundler);
  const bundleNow = async () => {
    agentBundle = await step(
      "agent",
      "bundling the guest agent",
      timings,
      onProgress,
      () => bundleAgent(bundler, agentEntry),
      (b) => `${(b.length / 1024).toFixed(0)} KiB`,
    );
    agentSha = await sha256Hex(agentBundle);
    await writeAgentStamp(options.assetsDir, agentEntry, bundler, agentSha).catch(() => {});
  };
  if (!agentSha) await bundleNow();

  const versionOf = (sha: string) => assetVersion(options.assetsDir, sources, sha);
  let { version, dir, recipeKey, rootfsKey } = await versionOf(agentSha!);
  const assets = (built: boolean, rootfsBytes: number, present = true): GuestAssets => ({
    arch,
    version,
    dir,
    kernel: join(dir, spec.kernelFile),
    initramfs: join(dir, "initramfs.img"),
    rootfs: join(dir, "rootfs.ext4"),
    tools: join(dir, "tools.ext4"),
    rootfsBytes,
    kernelRelease: sources.release,
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
    sources,
    agentBundle: agentBundle!,
    recipeKey,
    rootfsKey,
    timings,
    onProgress,
  });
  return assets(true, rootfsBytes);
}

/** Whether this host can build guest assets (Debian's tools: Linux). */
export function canBuildAssets(os: string = Deno.build.os): boolean {
  return os === "linux";
}

/** The answer of a `checkOnly` call when nothing is built or installed. */
function notPresent(arch: GuestArch, timings: Record<string, number>): GuestAssets {
  return {
    arch,
    version: "",
    dir: "",
    kernel: "",
    initramfs: "",
    rootfs: "",
    tools: "",
    rootfsBytes: 0,
    kernelRelease: "",
    built: false,
    present: false,
    timings,
  };
}

/** Size and version of a Deno binary: the same release gives the same identity anywhere. */
async function denoIdentity(binary: string, spec: ArchSpec): Promise<string> {
  const { size } = await Deno.stat(binary);
  if (binary === Deno.execPath()) return `${size}:${Deno.version.deno}`;
  if (spec.arch !== hostArch()) return `${size}:${basename(dirname(binary))}`;
  const out = await runTool(binary, ["--version"], {});
  return `${size}:${new TextDecoder().decode(out).split("\n")[0]}`;
}

/**
 * The key of the Debian tarball for `arch`. x86_64's is the recipe's hash alone, as before other
 * architectures existed, so its cached tarball stays valid.
 */
async function recipeKeyOf(arch: GuestArch): Promise<string> {
  const recipe = arch === "x86_64"
    ? DEBIAN_RECIPE
    : { ...DEBIAN_RECIPE, architecture: ARCH_SPECS[arch].debian };
  return (await sha256Hex(JSON.stringify(recipe))).slice(0, 16);
}

/** The Debian tarball's file name for `arch`. */
function tarballName(arch: GuestArch, recipeKey: string): string {
  const tag = arch === "x86_64" ? "" : `${ARCH_SPECS[arch].debian}-`;
  return `debian-${DEBIAN_RECIPE.suite}-${tag}${recipeKey}.tar`;
}

async function assetVersion(
  assetsDir: string,
  sources: Sources,
  agentSha: string,
): Promise<{ version: string; dir: string; recipeKey: string; rootfsKey: string }> {
  const { spec } = sources;
  const recipeKey = await recipeKeyOf(spec.arch);
  // The Debian image depends on the recipe and a few files only (not on the agent), so every
  // version with the same key shares one rootfs.ext4 (a hard link: one inode, one base cache).
  const rootfsKey = (await sha256Hex(JSON.stringify({
    format: ASSET_FORMAT,
    recipeKey,
    init: guestInitScript(),
    image: { minBytes: DEFAULT_FS_BYTES, mkfs: MKFS_OPTIONS },
  }))).slice(0, 16);
  const versionKey = await sha256Hex(JSON.stringify({
    format: ASSET_FORMAT,
    arch: spec.arch,
    rootfsKey,
    modules: MODULE_GROUPS,
    kernel: sources.kernelId,
    busybox: sources.busyboxId,
    tools: sources.toolsId,
    // The Deno binary by content, not path: each checkout (a CI clone) has its own copy.
    deno: await denoIdentity(sources.guestDeno, spec),
    agent: agentSha,
    scripts: await sha256Hex(initScript([]) + toolsInitScript() + toolsAgentRunScript()),
    agentCache: PRIMING_VERSION,
    // Builder choices that change the files; code changes beyond these bump ASSET_FORMAT.
    toolsImage: TOOLS_MKFS_OPTIONS,
  }));
  const version = `v${ASSET_FORMAT}-${spec.arch}-${versionKey.slice(0, 16)}`;
  return { version, dir: join(assetsDir, version), recipeKey, rootfsKey };
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
 * Removes asset versions other than those in `keepVersions` (the current one of each
 * architecture), abandoned partial builds, Debian tarballs of older recipes, shared root
 * filesystems no kept version uses and Deno binaries of other versions. A running VM keeps its
 * open files, so removing a version in use does not disturb it.
 */
export async function pruneAssets(
  assetsDir: string,
  keepVersions: readonly string[],
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
  const keep = new Set(keepVersions);
  for (const e of entries) {
    const path = join(assetsDir, e.name);
    if (e.isDirectory && /^v\d+-([a-z0-9_]+-)?[0-9a-f]+$/.test(e.name) && !keep.has(e.name)) {
      await remove(path, e.name);
    } else if (e.name.startsWith(".build-") && stale(await Deno.stat(path))) {
      await remove(path, e.name);
    }
  }
  const cache = join(assetsDir, "cache");
  const tarballs = new Set<string>();
  for (const arch of GUEST_ARCHES) tarballs.add(tarballName(arch, await recipeKeyOf(arch)));
  const cached = await Array.fromAsync(Deno.readDir(cache)).catch(() => [] as Deno.DirEntry[]);
  for (const e of cached) {
    const path = join(cache, e.name);
    const oldRecipe = e.name.endsWith(".tar") && !tarballs.has(e.name);
    const oldDeno = e.name.startsWith("deno-") && !e.name.endsWith(`-${Deno.version.deno}`);
    // Shared root filesystems that no kept version links to any more (one link: the cache's).
    const unusedRootfs = /^rootfs-[0-9a-f]+\.ext4$/.test(e.name) &&
      (await Deno.stat(path)).nlink === 1;
    if (
      oldRecipe || oldDeno || unusedRootfs ||
      (e.name.includes(".partial-") && stale(await Deno.stat(path)))
    ) {
      await remove(path, `cache/${e.name}`);
    }
  }
  return result;
}

interface BuildInputs extends EnsureAssetsOptions {
  dir: string;
  sources: Sources;
  agentBundle: Uint8Array;
  recipeKey: string;
  rootfsKey: string;
  timings: Record<string, number>;
  onProgress: (event: AssetProgress) => void;
  /** How commands run as root: the real root, or a user namespace (as_root.ts). */
  root: AsRoot;
}

const MIB = 1024 * 1024;

/** The kernel file a guest boots, from the package's `vmlinuz`. */
async function bootableKernel(spec: ArchSpec, vmlinuz: string): Promise<Uint8Array> {
  const bytes = await Deno.readFile(vmlinuz);
  return spec.kernelFormat === "image" ? await arm64Image(bytes) : await extractKernel(bytes);
}

async function build(inp: BuildInputs): Promise<number> {
  const { timings, onProgress, root, sources } = inp;
  const { spec } = sources;
  await Deno.mkdir(inp.assetsDir, { recursive: true });
  const work = await Deno.makeTempDir({ dir: inp.assetsDir, prefix: ".build-" });
  try {
    let prepared: Awaited<ReturnType<Sources["prepare"]>> | undefined;
    await step(
      "kernel",
      `preparing the ${spec.arch} kernel (${sources.release})`,
      timings,
      onProgress,
      async () => {
        prepared = await sources.prepare(work);
        const kernel = await bootableKernel(spec, prepared.vmlinuz);
        await Deno.writeFile(join(work, spec.kernelFile), kernel);
        return kernel.length;
      },
      (n) => `${(n / MIB).toFixed(1)} MiB ${spec.kernelFormat === "image" ? "Image" : "ELF"}`,
    );

    await step(
      "initramfs",
      "building the initramfs (busybox + kernel modules)",
      timings,
      onProgress,
      async () => {
        const resolved = new Map<ModuleGroup, LoadableModule[]>();
        for (const group of Object.keys(MODULE_GROUPS) as ModuleGroup[]) {
          resolved.set(group, await loadModules(prepared!.modulesDir, MODULE_GROUPS[group]));
        }
        const groups = groupModules(resolved);
        const image = await buildInitramfs(prepared!.busybox, groups, sources.release);
        await Deno.writeFile(join(work, "initramfs.img"), image);
        await Deno.remove(join(work, "kernel-package"), { recursive: true }).catch(() => {});
        return { bytes: image.length, modules: groups.reduce((n, g) => n + g.modules.length, 0) };
      },
      (r) => `${r.modules} modules, ${(r.bytes / MIB).toFixed(1)} MiB`,
    );

    // The Debian base, made (or found cached) when a step needs it: a foreign tools disk, or a
    // root filesystem not shared yet.
    let tarball: Promise<string> | undefined;
    const debianTarball = () => tarball ??= debianBase(inp);
    // Made before the tools step, so the two steps' progress does not interleave.
    if (sources.toolsFromDebian) await debianTarball();

    await step(
      "tools",
      `building the ${spec.arch} tools disk (agent, Deno, busybox, tini, setpriv, resize2fs)`,
      timings,
      onProgress,
      async (detail) => {
        const from = await sources.toolsRoot(work, debianTarball);
        if (from.runner.length > 0) detail(`filling the agent's Deno cache (${spec.qemuUser})`);
        const tree = await buildToolsTree(join(work, "tools-root"), {
          denoBinary: sources.guestDeno,
          agentBundle: inp.agentBundle,
          busybox: prepared!.busybox,
          from,
        });
        const bytes = await makeToolsImage(tree, join(work, "tools.ext4"), { root });
        await Deno.remove(join(work, "tools-root"), { recursive: true });
        await Deno.remove(join(work, "tools-source"), { recursive: true }).catch(() => {});
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

    const tar = await debianTarball();
    const tree = join(work, "root");
    const contentBytes = await step(
      "rootfs-tree",
      "assembling the root filesystem",
      timings,
      onProgress,
      async (detail) => {
        await Deno.mkdir(tree);
        // tar reports every 1000 records (10 KiB each); the tarball's size gives the fraction.
        const tarBytes = (await Deno.stat(tar)).size;
        await root.run("tar", [
          "-xpf",
          tar,
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

/** The Debian base tarball of the build's architecture: cached by its recipe, else mmdebstrap. */
function debianBase(inp: BuildInputs): Promise<string> {
  const { timings, onProgress, root, sources } = inp;
  const { spec } = sources;
  return step(
    "debian",
    `Debian base for ${spec.arch} (mmdebstrap)`,
    timings,
    onProgress,
    async (detail) => {
      const cacheDir = join(inp.assetsDir, "cache");
      const tar = join(cacheDir, tarballName(spec.arch, inp.recipeKey));
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
        await sources.mmdebstrap([...mode, ...mmdebstrapArgs(DEBIAN_RECIPE, partial)], (text) => {
          for (const line of (lastLine + text).split("\n").slice(0, -1)) {
            if (line.trim()) detail(line.trim());
          }
          lastLine = (lastLine + text).split("\n").pop() ?? "";
        });
        await Deno.rename(partial, tar);
      } finally {
        await Deno.remove(partial).catch(() => {});
      }
      return { tar, cached: false };
    },
    (r) => (r.cached ? "cached " : "") + basename(r.tar),
  ).then((r) => r.tar);
}

/** Writes the manifest and renames the build folder into place. */
async function install(inp: BuildInputs, work: string, imageBytes: number): Promise<void> {
  const { timings, onProgress, sources } = inp;
  await step("install", "installing the assets", timings, onProgress, async () => {
    const manifest: AssetsManifest = {
      format: ASSET_FORMAT,
      arch: sources.spec.arch,
      rootfsBytes: imageBytes,
      kernelRelease: sources.release,
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
