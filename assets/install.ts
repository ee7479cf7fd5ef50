/**
 * Guest assets from a bundle instead of a build: a host that cannot build them (macOS has no
 * mmdebstrap, no apt) installs the set a Linux host exported, and any host can
 * (`shuru init --bundle FILE|URL`).
 *
 * - {@linkcode exportBundle}: a version folder as one bundle file (`bundle.ts` has the format).
 * - {@linkcode installBundle}: downloads (http/https) or opens the bundle, checks its SHA-256
 *   against a pinned digest when given, refuses another architecture or asset format before
 *   anything is written, unpacks it (each file checked against the bundle's manifest) into a
 *   temporary folder, renames that into `<assets>/<version>/` and records it as the installed
 *   bundle of its architecture (`installed-<arch>.json`). Any failure leaves nothing behind.
 * - {@linkcode readInstalledBundle}: what `ensureAssets` uses, before building, while an
 *   installed bundle is recorded (a plain `shuru init` on Linux builds and forgets it).
 *
 * @module
 */

import { dirname, join } from "node:path";
import type { GuestArch } from "../host/mod.ts";
import type { RegistryAccess } from "../oci/mod.ts";
import { ARCH_SPECS } from "./arch.ts";
import {
  BundleError,
  type BundleManifest,
  sha256File,
  unpackBundle,
  writeBundle,
  type WrittenBundle,
} from "./bundle.ts";
import { AssetError } from "./errors.ts";
import { pullBundle, pushBundle, type PushedBundle, registryBundleRef } from "./oci_bundle.ts";
import { type AssetProgress, step } from "./progress.ts";
import { ASSET_FORMAT, type AssetsManifest, readManifest } from "./version_dir.ts";

/** The record of an installed bundle (`<assets>/installed-<arch>.json`). */
export interface InstalledBundle {
  /** The assets version folder it unpacked to. */
  version: string;
  /** Its architecture. */
  arch: GuestArch;
  /** SHA-256 of the bundle file (hex). */
  sha256: string;
  /** The file or URL it came from. */
  source: string;
  /** When (ISO 8601). */
  installedAt: string;
}

/** Where the installed bundle of `arch` is recorded. */
export function installedBundleFile(assetsDir: string, arch: GuestArch): string {
  return join(assetsDir, `installed-${arch}.json`);
}

/**
 * The installed bundle of `arch` with its version folder's manifest, or undefined when none is
 * recorded or its folder is gone or of another asset format.
 */
export async function readInstalledBundle(
  assetsDir: string,
  arch: GuestArch,
): Promise<{ bundle: InstalledBundle; dir: string; manifest: AssetsManifest } | undefined> {
  let bundle: InstalledBundle;
  try {
    bundle = JSON.parse(await Deno.readTextFile(installedBundleFile(assetsDir, arch)));
  } catch {
    return undefined;
  }
  if (typeof bundle?.version !== "string" || !versionRe(arch).test(bundle.version)) {
    return undefined;
  }
  const dir = join(assetsDir, bundle.version);
  const manifest = await readManifest(dir);
  if (!manifest || manifest.arch !== arch) return undefined;
  return { bundle, dir, manifest };
}

/** Forgets the installed bundle of `arch` (its folder stays until `shuru prune --assets`). */
export async function forgetInstalledBundle(assetsDir: string, arch: GuestArch): Promise<void> {
  await Deno.remove(installedBundleFile(assetsDir, arch)).catch(() => {});
}

/** Version folder names of `arch` in this asset format. */
function versionRe(arch: GuestArch): RegExp {
  return new RegExp(`^v${ASSET_FORMAT}-${arch}-[0-9a-f]{16}$`);
}

/**
 * A pinned digest, `sha256:HEX` or the bare 64 hex digits, as lowercase hex.
 *
 * @throws {AssetError} `bundle_refused` naming the value.
 */
export function parseBundleDigest(value: string): string {
  const hex = value.startsWith("sha256:") ? value.slice("sha256:".length) : value;
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new AssetError(
      "bundle_refused",
      `Invalid bundle digest ${JSON.stringify(value)}: expected sha256: and 64 hex digits`,
    );
  }
  return hex.toLowerCase();
}

/** Options of {@linkcode exportBundle}. */
export interface ExportBundleOptions {
  /** Progress events (steps `export`, `push`). */
  onProgress?: (event: AssetProgress) => void;
  /** How to reach a registry (`docker://` targets). */
  registry?: RegistryAccess;
}

/** What {@linkcode exportBundle} made. */
export interface ExportedBundle extends WrittenBundle {
  /** Where it was pushed, for a `docker://` target. */
  pushed?: PushedBundle;
}

/**
 * Writes the version folder of `assets` as a bundle at `out` (through `out.partial-PID`, so a
 * failed export leaves no file that looks complete), or, for `out` = `docker://REF`, pushes it
 * there as an OCI artifact (`oci_bundle.ts`) from a temporary file beside the assets.
 */
export async function exportBundle(
  assets: { dir: string; version: string; arch: GuestArch },
  out: string,
  options: ExportBundleOptions = {},
): Promise<ExportedBundle> {
  const ref = registryBundleRef(out);
  if (ref === undefined) return await writeBundleFile(assets, out, options);
  const work = await Deno.makeTempDir({ dir: dirname(assets.dir), prefix: ".build-export-" });
  try {
    const file = join(work, `shuru-assets-${assets.arch}.tar.gz`);
    const written = await writeBundleFile(assets, file, options);
    const pushed = await step(
      "push",
      `pushing the bundle to ${out}`,
      {},
      options.onProgress ?? (() => {}),
      async (detail) =>
        await pushBundle(file, ref, {
          manifest: written.manifest,
          ...(options.registry ? { access: options.registry } : {}),
          onProgress: percentDetail(detail),
        }),
      (p) => p.pinned,
    );
    return { ...written, pushed };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

async function writeBundleFile(
  assets: { dir: string; version: string; arch: GuestArch },
  out: string,
  options: ExportBundleOptions,
): Promise<WrittenBundle> {
  const partial = `${out}.partial-${Deno.pid}`;
  const onProgress = options.onProgress ?? (() => {});
  try {
    return await step(
      "export",
      `writing the ${assets.arch} assets bundle ${out}`,
      {},
      onProgress,
      async (detail) => {
        const written = await writeBundle(assets.dir, partial, {
          arch: assets.arch,
          assetsVersion: assets.version,
          onProgress: percentDetail(detail),
        });
        await Deno.rename(partial, out);
        return written;
      },
      (w) => `${mib((Deno.statSync(out)).size)} MiB, sha256:${w.sha256}`,
    );
  } finally {
    await Deno.remove(partial).catch(() => {});
  }
}

/** Options of {@linkcode installBundle}. */
export interface InstallBundleOptions {
  /** The assets folder (`homeLayout().assets`). */
  assetsDir: string;
  /** The architecture asked for: a bundle of another is refused. */
  arch?: GuestArch;
  /** The pinned SHA-256 of the bundle file (hex; see {@linkcode parseBundleDigest}). */
  sha256?: string;
  /** Progress events (steps `download`, `verify`, `unpack`, `install`). */
  onProgress?: (event: AssetProgress) => void;
  /** How to reach a registry (`docker://` sources). */
  registry?: RegistryAccess;
}

/** What {@linkcode installBundle} did. */
export interface InstallBundleResult {
  /** The record now in `installed-<arch>.json`. */
  bundle: InstalledBundle;
  /** The version folder. */
  dir: string;
  /** `false` when that version was already installed (its folder was kept). */
  unpacked: boolean;
  /** Milliseconds per step. */
  timings: Record<string, number>;
}

/**
 * Installs the bundle at `source` (a file, an http/https URL, or `docker://REF`, an OCI
 * artifact) into `options.assetsDir` as the installed bundle of its architecture.
 *
 * @throws {BundleError} when the bundle is corrupt, truncated or not the pinned one.
 * @throws {AssetError} `download_failed` (the URL), `bundle_refused` (another architecture or
 *   asset format, an invalid digest).
 */
export async function installBundle(
  source: string,
  options: InstallBundleOptions,
): Promise<InstallBundleResult> {
  const onProgress = options.onProgress ?? (() => {});
  const timings: Record<string, number> = {};
  const sha256 = options.sha256 === undefined ? undefined : parseBundleDigest(options.sha256);
  await Deno.mkdir(options.assetsDir, { recursive: true });
  // A `.build-*` folder: `shuru prune --assets` removes one an interrupted install left.
  const work = await Deno.makeTempDir({ dir: options.assetsDir, prefix: ".build-bundle-" });
  try {
    const url = /^https?:\/\//i.test(source);
    const ref = registryBundleRef(source);
    const file = url || ref !== undefined ? join(work, "bundle.tar.gz") : source;
    if (url) await download(source, file, timings, onProgress);
    if (ref !== undefined) {
      await step("download", `pulling ${source}`, timings, onProgress, async (detail) => {
        await pullBundle(ref, file, {
          ...(options.registry ? { access: options.registry } : {}),
          onProgress: percentDetail(detail),
        });
        return (await Deno.stat(file)).size;
      }, (n) => `${mib(n)} MiB`);
    }
    const files = join(work, "files");
    await Deno.mkdir(files);
    const bytes = (await Deno.stat(file)).size;
    let manifest: BundleManifest | undefined;
    const fileSha = await step(
      "verify",
      sha256 ? "checking the bundle's SHA-256" : "hashing the bundle (no digest pinned)",
      timings,
      onProgress,
      async (detail) => {
        const progress = percentDetail(detail);
        return await sha256File(file, (done) => progress(done, bytes));
      },
      (hex) => `sha256:${hex}`,
    );
    if (sha256 !== undefined && fileSha !== sha256) {
      throw new BundleError(
        "digest_mismatch",
        `Cannot use bundle ${source}: its SHA-256 is ${fileSha}, expected ${sha256}`,
      );
    }
    await step(
      "unpack",
      "unpacking the bundle (every file checked against its manifest)",
      timings,
      onProgress,
      async (detail) => {
        const progress = percentDetail(detail);
        manifest = await unpackBundle(file, files, {
          accept: (m) => acceptBundle(m, source, options.arch),
          onProgress: (_phase, done, total) => progress(done, total),
        });
        return manifest;
      },
      (m) => `${m.files.length} files, ${m.assetsVersion}`,
    );
    const m = manifest!;
    const inside = await readManifest(files);
    if (!inside || inside.arch !== m.arch) {
      throw new AssetError(
        "bundle_refused",
        `Cannot install bundle ${source}: its manifest.json is not one of ${m.arch} assets ` +
          `in format ${ASSET_FORMAT}`,
      );
    }
    const dir = join(options.assetsDir, m.assetsVersion);
    const unpacked = await step(
      "install",
      `installing ${m.assetsVersion}`,
      timings,
      onProgress,
      async () => {
        await Deno.chmod(files, 0o755);
        if (await readManifest(dir)) return false; // the same version, already complete
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        await Deno.rename(files, dir);
        return true;
      },
      (fresh) => (fresh ? dir : `${dir} was already installed`),
    );
    const bundle: InstalledBundle = {
      version: m.assetsVersion,
      arch: m.arch,
      sha256: fileSha,
      source,
      installedAt: new Date().toISOString(),
    };
    const record = installedBundleFile(options.assetsDir, m.arch);
    await Deno.writeTextFile(`${record}.${Deno.pid}.tmp`, JSON.stringify(bundle, null, 2) + "\n");
    await Deno.rename(`${record}.${Deno.pid}.tmp`, record);
    return { bundle, dir, unpacked, timings };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Refuses a bundle this shuru cannot use, before a byte of it is unpacked. */
function acceptBundle(m: BundleManifest, source: string, arch: GuestArch | undefined): void {
  const refuse = (why: string) =>
    new AssetError("bundle_refused", `Cannot install bundle ${source}: ${why}`);
  if (arch !== undefined && m.arch !== arch) {
    throw refuse(`it holds ${m.arch} assets, not ${arch}`);
  }
  const format = /^v(\d+)-/.exec(m.assetsVersion)?.[1];
  if (format !== String(ASSET_FORMAT)) {
    throw refuse(
      `its assets (${m.assetsVersion}) are in format ${format ?? "?"}, this shuru uses ` +
        `format ${ASSET_FORMAT}: export it with the same shuru version`,
    );
  }
  if (!versionRe(m.arch).test(m.assetsVersion)) {
    throw refuse(`its version ${JSON.stringify(m.assetsVersion)} is not an assets version`);
  }
  const names = new Set(m.files.map((f) => f.name));
  const needed = [ARCH_SPECS[m.arch].kernelFile, "initramfs.img", "rootfs.ext4", "tools.ext4"];
  const missing = [...needed, "manifest.json"].filter((n) => !names.has(n));
  if (missing.length > 0) throw refuse(`it lacks ${missing.join(", ")}`);
}

/** Downloads `url` to `file` with progress (step `download`). */
async function download(
  url: string,
  file: string,
  timings: Record<string, number>,
  onProgress: (event: AssetProgress) => void,
): Promise<void> {
  await step("download", `downloading ${url}`, timings, onProgress, async (detail) => {
    let response: Response;
    try {
      response = await fetch(url);
    } catch (err) {
      throw new AssetError(
        "download_failed",
        `Cannot download bundle ${url}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new AssetError(
        "download_failed",
        `Cannot download bundle ${url}: HTTP ${response.status} ${response.statusText}`,
      );
    }
    const total = Number(response.headers.get("content-length") ?? NaN);
    const progress = percentDetail(detail);
    let done = 0;
    const counted = response.body.pipeThrough(
      new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>({
        transform(chunk, controller) {
          done += chunk.length;
          if (total > 0) progress(done, total);
          controller.enqueue(chunk);
        },
      }),
    );
    const out = await Deno.open(file, { write: true, createNew: true, mode: 0o644 });
    try {
      await counted.pipeTo(out.writable);
    } catch (err) {
      throw new AssetError(
        "download_failed",
        `Cannot download bundle ${url}: ${(err as Error).message} after ${done} bytes`,
        { cause: err },
      );
    }
    if (total > 0 && done !== total) {
      throw new AssetError(
        "download_failed",
        `Cannot download bundle ${url}: the server sent ${done} of ${total} bytes`,
      );
    }
    return done;
  }, (n) => `${mib(n)} MiB`);
}

/** A progress callback that passes `done` of `total` bytes to `detail` once per percent. */
function percentDetail(
  detail: (text: string, fraction?: number) => void,
): (done: number, total: number) => void {
  let last = -1;
  return (done, total) => {
    const percent = Math.floor((done / total) * 100);
    if (percent === last) return;
    last = percent;
    detail(`${mib(done)} of ${mib(total)} MiB`, done / total);
  };
}

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(0);
}
