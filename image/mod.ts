/**
 * OCI and Docker images as sandbox root filesystems.
 *
 * {@linkcode ensureImage} turns an image reference (`oci:DIR[:TAG]`, `docker-archive:FILE`, or a
 * registry reference) into an ext4 base image plus the image's settings: the manifest and
 * config are read and checked, each layer is verified (blob digest, size, and uncompressed
 * `diff_id`), decompressed under a size budget, and applied in order with OCI semantics
 * (`unpack.ts`) to a staging tree; `ext4.ts` writes the tree with its owners, modes, xattrs and
 * device nodes without root. The result is cached by the config digest (the image's content),
 * the disk size and {@linkcode IMAGE_FORMAT}, in a folder renamed into place when complete, and
 * ingested into the block store so checkpoints share its chunks. See `docs/images.md`.
 *
 * ```ts ignore
 * const image = await ensureImage("oci:./img:v1", { imagesDir, diskBytes: 4 << 30, store });
 * const device = await store.openDevice({ base: image.rootfs }, { overlayDir });
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { ImageError } from "./errors.ts";
import { guestPlatform, type ImageConfig } from "./manifest.ts";
import type { GuestArch } from "../host/mod.ts";
import {
  corruptBlobError,
  type ExpansionBudget,
  type ImageProgress,
  openLayerTar,
  parseImageReference,
  type RegistryResolver,
  type ResolvedImage,
  resolveDockerArchive,
  resolveOciLayout,
  shortDigest,
} from "./source.ts";
import { RootTree } from "./unpack.ts";
import { inodesFor, writeExt4 } from "./ext4.ts";
import { type ImageUser, resolveUser } from "./user.ts";

export { ImageError, type ImageErrorCode } from "./errors.ts";
export {
  type ImageProgress,
  type ImageReference,
  parseImageReference,
  type RegistryResolver,
  type ResolvedImage,
} from "./source.ts";
export { type RegistryImageOptions, registryResolver } from "./registry.ts";
export type { ImageConfig } from "./manifest.ts";
export type { ImageUser } from "./user.ts";

/** Bumped when the conversion's output changes meaning; part of the cache key. */
export const IMAGE_FORMAT = 1;

/** What a sandbox takes from the image config. */
export interface ImageDefaults {
  /** `Env` (`KEY=VALUE`, in order); `-e` goes over it. */
  env: string[];
  /** `WorkingDir` ("" when unset): the default `--cwd`. */
  workingDir: string;
  /** `Entrypoint` + `Cmd`: the command when none is given (empty when neither is set). */
  command: string[];
  /** `User`, resolved in the image (absent: root). */
  user?: ImageUser;
  /** `ExposedPorts` (`8080/tcp`). */
  exposedPorts: string[];
}

/** A converted image, ready to boot. */
export interface PreparedImage {
  /** The reference as given. */
  reference: string;
  /** The manifest digest, when the source has one. */
  manifestDigest?: string;
  /** The config digest (the cache key's content part). */
  configDigest: string;
  /** The ext4 base image. */
  rootfs: string;
  /** Its size in bytes (the disk size it was made for). */
  diskBytes: number;
  /** Bytes of files in it. */
  fileBytes: number;
  /** The image's settings. */
  defaults: ImageDefaults;
  /** `true` when it came from the cache. */
  cached: boolean;
  /** Milliseconds per step when converted now. */
  timings: Record<string, number>;
}

/** Options of {@linkcode ensureImage}. */
export interface EnsureImageOptions {
  /** The images folder (`<data home>/images`). */
  imagesDir: string;
  /** Disk size in bytes: the filesystem's size (whole MiB). */
  diskBytes: number;
  /** The guest's architecture (default: the host's): the image's platform must be its. */
  arch?: GuestArch;
  /** The block store to ingest the result into (`Store.prepareBase`). */
  store?: { prepareBase(path: string): Promise<number> };
  /** Resolves registry references; without it they are refused. */
  registry?: RegistryResolver;
  /** Progress lines. */
  onProgress?: (p: ImageProgress) => void;
}

/** Filesystem bytes an image's files may take of a disk: what ext4 leaves after its metadata. */
export function usableBytes(diskBytes: number): number {
  // Inode tables (256 B per 16 KiB), the journal (up to 128 MiB at these sizes), group
  // descriptors and bitmaps: about 3% + 64 MiB on a few GiB.
  return Math.floor(diskBytes * 0.97) - 64 * 1048576;
}

interface CacheRecord {
  format: number;
  reference: string;
  manifestDigest?: string;
  configDigest: string;
  diskBytes: number;
  fileBytes: number;
  defaults: ImageDefaults;
  timings: Record<string, number>;
}

/** The cache folder of an image for a disk size. */
export function imageCacheDir(imagesDir: string, configDigest: string, diskBytes: number): string {
  const mib = Math.floor(diskBytes / 1048576);
  return join(imagesDir, `v${IMAGE_FORMAT}-${configDigest.slice(7)}-${mib}m`);
}

async function readRecord(dir: string): Promise<CacheRecord | undefined> {
  try {
    const r = JSON.parse(await Deno.readTextFile(join(dir, "image.json"))) as CacheRecord;
    if (r.format === IMAGE_FORMAT) {
      await Deno.stat(join(dir, "rootfs.ext4"));
      return r;
    }
  } catch {
    // absent or unreadable: not cached
  }
  return undefined;
}

/** Resolves a reference to its manifest, config and layers (reads no layer). */
export async function resolveImage(
  text: string,
  options: Pick<EnsureImageOptions, "imagesDir" | "registry" | "onProgress" | "arch"> = {
    imagesDir: "",
  },
): Promise<ResolvedImage> {
  const ref = parseImageReference(text);
  const platform = guestPlatform(options.arch);
  if (ref.kind === "oci") return await resolveOciLayout(ref, platform);
  if (ref.kind === "docker-archive") return await resolveDockerArchive(ref, platform);
  if (!options.registry) {
    throw new ImageError(
      "invalid_reference",
      `Cannot pull ${text}: registry images are not available here (use oci:DIR or docker-archive:FILE)`,
    );
  }
  return await options.registry(ref.ref, {
    blobsDir: join(options.imagesDir, "blobs"),
    onProgress: options.onProgress ?? (() => {}),
    platform,
  });
}

/**
 * Returns the image converted for `diskBytes`, converting it first unless cached.
 *
 * @throws {ImageError} with a one-line message for every bad input (see `errors.ts`).
 */
export async function ensureImage(
  text: string,
  options: EnsureImageOptions,
): Promise<PreparedImage> {
  const progress = options.onProgress ?? (() => {});
  if (options.diskBytes % 1048576 !== 0 || options.diskBytes <= 0) {
    throw new RangeError(`diskBytes must be whole MiB, got ${options.diskBytes}`);
  }
  const image = await resolveImage(text, options);
  const dir = imageCacheDir(options.imagesDir, image.configDigest, options.diskBytes);
  const cached = await readRecord(dir);
  if (cached) return prepared(cached, dir, text, true);

  await Deno.mkdir(join(options.imagesDir, "tmp"), { recursive: true });
  const work = await Deno.makeTempDir({ dir: join(options.imagesDir, "tmp"), prefix: "build-" });
  try {
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    const usable = usableBytes(options.diskBytes);
    const diskMiB = options.diskBytes / 1048576;
    const tree = await RootTree.create(join(work, "root"), {
      maxBytes: usable,
      maxInodes: inodesFor(options.diskBytes) - 16,
      diskLabel: `the ${diskMiB} MiB disk (--disk-size)`,
    });
    const budget: ExpansionBudget = {
      left: 2 * options.diskBytes,
      label: `${2 * diskMiB} MiB (twice the ${diskMiB} MiB disk)`,
    };
    for (const layer of image.layers) {
      progress({
        text: `unpacking ${layer.label} of ${image.layers.length}`,
        fraction: (layer.index - 1) / image.layers.length,
      });
      const tar = await openLayerTar(layer, { budget, image: text });
      try {
        await tree.applyLayer(tar, layer.index, `${text}, ${layer.label}`);
      } catch (err) {
        await tar.cancel();
        if (!(err instanceof ImageError) || err.code === "bad_layer") {
          const corrupt = await corruptBlobError(layer, text);
          if (corrupt) throw corrupt;
        }
        if (err instanceof ImageError) throw err;
        throw new ImageError(
          "bad_layer",
          `Cannot unpack ${text}, ${layer.label}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    timings.unpack = Math.round(performance.now() - t0);
    // Mount points the guest needs (OCI runtimes make them too).
    for (
      const [path, mode] of [["/dev", 0o755], ["/proc", 0o555], ["/sys", 0o555], [
        "/tmp",
        0o1777,
      ], ["/run", 0o755]] as const
    ) {
      tree.ensureDir(path, mode);
    }
    // The working folder exists before anything runs in it (runc makes it too).
    if (image.config.workingDir.startsWith("/")) tree.ensureDir(image.config.workingDir, 0o755);
    const defaults = imageDefaults(image.config, tree, text);
    progress({
      text: `writing the ext4 filesystem (${Math.ceil(tree.bytes / 1048576)} MiB of files)`,
    });
    const t1 = performance.now();
    const written = await writeExt4(tree, {
      image: join(work, "rootfs.ext4"),
      bytes: options.diskBytes,
      workDir: work,
    });
    timings.mkfs = written.mkfsMs;
    timings.debugfs = written.debugfsMs;
    timings.ext4 = Math.round(performance.now() - t1);
    await Deno.remove(join(work, "root"), { recursive: true });
    await Deno.remove(join(work, "xattrs"), { recursive: true }).catch(() => {});
    await Deno.remove(join(work, "debugfs.cmd")).catch(() => {});
    const record: CacheRecord = {
      format: IMAGE_FORMAT,
      reference: text,
      ...(image.manifestDigest ? { manifestDigest: image.manifestDigest } : {}),
      configDigest: image.configDigest,
      diskBytes: options.diskBytes,
      fileBytes: tree.bytes,
      defaults,
      timings,
    };
    await Deno.writeTextFile(join(work, "image.json"), JSON.stringify(record, null, 2) + "\n");
    try {
      await Deno.rename(work, dir);
    } catch (err) {
      // Another conversion of the same image finished first: use it.
      if (!(await readRecord(dir))) throw err;
    }
    if (options.store) {
      progress({ text: "adding the image's blocks to the store" });
      const t2 = performance.now();
      await options.store.prepareBase(join(dir, "rootfs.ext4"));
      timings.ingest = Math.round(performance.now() - t2);
    }
    return prepared({ ...record, timings }, dir, text, false);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

function prepared(r: CacheRecord, dir: string, text: string, cached: boolean): PreparedImage {
  return {
    reference: text,
    ...(r.manifestDigest ? { manifestDigest: r.manifestDigest } : {}),
    configDigest: r.configDigest,
    rootfs: join(dir, "rootfs.ext4"),
    diskBytes: r.diskBytes,
    fileBytes: r.fileBytes,
    defaults: r.defaults,
    cached,
    timings: cached ? {} : r.timings,
  };
}

/** The sandbox defaults of `config`, with `User` resolved in the unpacked tree. */
function imageDefaults(config: ImageConfig, tree: RootTree, name: string): ImageDefaults {
  const text = (path: string) => {
    const bytes = tree.readFile(path);
    return bytes ? new TextDecoder().decode(bytes) : undefined;
  };
  const user = config.user === "" || config.user === "root" || config.user === "0"
    ? undefined
    : resolveUser(config.user, { passwd: text("/etc/passwd"), group: text("/etc/group") }, name);
  return {
    env: config.env,
    workingDir: config.workingDir,
    command: [...config.entrypoint, ...config.cmd],
    ...(user ? { user } : {}),
    exposedPorts: config.exposedPorts,
  };
}

/** What {@linkcode pruneImages} removed. */
export interface ImagePruneResult {
  /** Removed entries (names under the images folder). */
  removed: string[];
  /** Bytes freed (allocated blocks: the images are sparse). */
  bytes: number;
}

async function treeSize(path: string): Promise<number> {
  const info = await Deno.lstat(path);
  if (!info.isDirectory) return info.isFile ? (info.blocks ?? 0) * 512 : 0;
  let n = 0;
  for await (const e of Deno.readDir(path)) n += await treeSize(join(path, e.name));
  return n;
}

/**
 * Removes every converted image and pulled layer under `imagesDir` (the next `--image`
 * converts again; checkpoints keep their chunks in the store), and conversions that were
 * interrupted. A running VM keeps the open file of its image.
 */
export async function pruneImages(imagesDir: string): Promise<ImagePruneResult> {
  const result: ImagePruneResult = { removed: [], bytes: 0 };
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(imagesDir));
  } catch {
    return result;
  }
  for (const e of entries) {
    const path = join(imagesDir, e.name);
    result.bytes += await treeSize(path).catch(() => 0);
    await Deno.remove(path, { recursive: true });
    result.removed.push(e.name);
  }
  return result;
}

/** Short form of a digest for messages (`sha256:` and 12 hex digits). */
export { shortDigest };
