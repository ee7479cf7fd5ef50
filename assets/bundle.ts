/**
 * Asset bundles: one set of guest assets (a version folder: kernel, initramfs, root
 * filesystem, manifest) as a single file, so a host that cannot build them (a Mac has no
 * mmdebstrap) can fetch them, verify them and unpack them. docs/macos.md describes the format.
 *
 * A bundle is a gzip-compressed POSIX ustar archive whose first entry is
 * {@linkcode BUNDLE_MANIFEST}: the architecture, the assets version and every file's name, size
 * and SHA-256. The bundle as a whole is pinned by its own SHA-256, checked before a byte of it is
 * unpacked; each file is then checked against the manifest as it is written. Nothing but the
 * listed regular files is accepted (no links, folders, paths or extra entries), and runs of
 * zeros are not written, so the root filesystem unpacks sparse again.
 *
 * `shuru init --export FILE` writes one (`writeBundle`); `shuru init --bundle FILE|URL` installs
 * one (`install.ts`, through `unpackBundle`).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { GUEST_ARCHES, type GuestArch } from "../host/mod.ts";
import { join } from "node:path";
import {
  concatBytes,
  encodeTarHeader as encodeHeader,
  TAR_BLOCK as BLOCK,
  tarPadding as padding,
  TarReader,
  writeAll,
} from "../io/mod.ts";

/** Name of the manifest, the first entry of every bundle. */
export const BUNDLE_MANIFEST = "shuru-bundle.json";
/** The `format` value of a bundle manifest. */
export const BUNDLE_FORMAT = "shuru-assets-bundle";
/** The manifest version this code reads and writes. */
export const BUNDLE_FORMAT_VERSION = 1;

const MANIFEST_MAX_BYTES = 64 * 1024;
const FILE_MAX_BYTES = 64 * 1024 ** 3;
const MAX_FILES = 16;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** One file of a bundle. */
export interface BundleFile {
  /** File name in the version folder (no path). */
  name: string;
  /** Size in bytes. */
  size: number;
  /** SHA-256, lowercase hex. */
  sha256: string;
}

/** The manifest at the front of a bundle. */
export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  formatVersion: number;
  /** Guest architecture. */
  arch: GuestArch;
  /** The assets version folder name the files form. */
  assetsVersion: string;
  /** Every file, in archive order. */
  files: BundleFile[];
}

/** What went wrong with a bundle. */
export type BundleErrorCode =
  /** The bundle's SHA-256 is not the pinned one. */
  | "digest_mismatch"
  /** The archive or its manifest breaks the format. */
  | "malformed"
  /** A file's size or SHA-256 differs from the manifest. */
  | "file_mismatch";

/** A bundle could not be verified or unpacked; nothing of it is left behind. */
export class BundleError extends Error {
  /** Machine-readable reason. */
  readonly code: BundleErrorCode;
  constructor(code: BundleErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BundleError";
    this.code = code;
  }
}

/**
 * Parses and checks a manifest's text.
 *
 * @throws {BundleError} `malformed`, naming the field.
 */
export function parseBundleManifest(text: string, source = "the bundle"): BundleManifest {
  const bad = (why: string) =>
    new BundleError("malformed", `Cannot use ${source}: its manifest ${why}`);
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text);
  } catch {
    throw bad("is not JSON");
  }
  if (typeof m !== "object" || m === null) throw bad("is not an object");
  if (m.format !== BUNDLE_FORMAT) throw bad(`has format ${JSON.stringify(m.format)}`);
  if (typeof m.formatVersion !== "number" || !Number.isInteger(m.formatVersion)) {
    throw bad("has no formatVersion");
  }
  if (m.formatVersion > BUNDLE_FORMAT_VERSION) {
    throw bad(`is version ${m.formatVersion}, made by a newer shuru (this one reads 1)`);
  }
  if (m.formatVersion < 1) throw bad(`has formatVersion ${m.formatVersion}`);
  const arch = GUEST_ARCHES.find((a) => a === m.arch);
  if (arch === undefined) throw bad(`has arch ${JSON.stringify(m.arch)}`);
  if (typeof m.assetsVersion !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(m.assetsVersion)) {
    throw bad(`has assetsVersion ${JSON.stringify(m.assetsVersion)}`);
  }
  if (!Array.isArray(m.files) || m.files.length === 0 || m.files.length > MAX_FILES) {
    throw bad(`must list 1-${MAX_FILES} files`);
  }
  const names = new Set<string>();
  const files: BundleFile[] = m.files.map((f: unknown, i: number) => {
    const file = f as Record<string, unknown>;
    if (
      typeof file?.name !== "string" || !NAME_RE.test(file.name) || file.name === BUNDLE_MANIFEST
    ) {
      throw bad(`file ${i} has name ${JSON.stringify(file?.name)}`);
    }
    if (names.has(file.name)) throw bad(`lists ${file.name} twice`);
    names.add(file.name);
    if (
      typeof file.size !== "number" || !Number.isSafeInteger(file.size) || file.size < 0 ||
      file.size > FILE_MAX_BYTES
    ) {
      throw bad(`file ${file.name} has size ${JSON.stringify(file.size)}`);
    }
    if (typeof file.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(file.sha256)) {
      throw bad(`file ${file.name} has sha256 ${JSON.stringify(file.sha256)}`);
    }
    return { name: file.name, size: file.size, sha256: file.sha256 };
  });
  return {
    format: BUNDLE_FORMAT,
    formatVersion: m.formatVersion,
    arch,
    assetsVersion: m.assetsVersion,
    files,
  };
}

/** The SHA-256 of a file, hex; `onBytes` hears the bytes hashed so far. */
export async function sha256File(
  path: string,
  onBytes?: (done: number) => void,
): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  let done = 0;
  for await (const chunk of file.readable) {
    hash.update(chunk);
    done += chunk.length;
    onBytes?.(done);
  }
  return hash.digest("hex");
}

/** Options of {@linkcode unpackBundle}. */
export interface UnpackOptions {
  /** The pinned SHA-256 of the bundle file (checked before anything is unpacked). */
  sha256?: string;
  /** Bytes of the bundle file read so far, in each phase (`total`: the file's size). */
  onProgress?: (phase: "verify" | "unpack", done: number, total: number) => void;
  /**
   * Called with the manifest before any file is written; throws to refuse the bundle (another
   * architecture or asset format than the caller can use). Its error is thrown as it is.
   */
  accept?: (manifest: BundleManifest) => void;
}

/**
 * Verifies the bundle `path` and unpacks its files into the folder `into` (which must exist and
 * should be new: the caller renames it into place). On any failure the files written so far
 * are removed.
 *
 * @throws {BundleError} `digest_mismatch`, `malformed` or `file_mismatch`, saying which file.
 */
export async function unpackBundle(
  path: string,
  into: string,
  options: UnpackOptions = {},
): Promise<BundleManifest> {
  const source = `bundle ${path}`;
  const total = (await Deno.stat(path)).size;
  const progress = options.onProgress;
  if (options.sha256 !== undefined) {
    const actual = await sha256File(path, (done) => progress?.("verify", done, total));
    if (actual !== options.sha256.toLowerCase()) {
      throw new BundleError(
        "digest_mismatch",
        `Cannot use ${source}: its SHA-256 is ${actual}, expected ${options.sha256}`,
      );
    }
  }
  const written: string[] = [];
  let refused: unknown;
  using file = await Deno.open(path);
  const malformed = (why: string) => new BundleError("malformed", `Cannot use ${source}: ${why}`);
  let read = 0;
  const counted = file.readable.pipeThrough(
    new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>({
      transform(chunk, controller) {
        read += chunk.length;
        progress?.("unpack", read, total);
        controller.enqueue(chunk);
      },
    }),
  );
  const tar = new TarReader(counted.pipeThrough(new DecompressionStream("gzip")), {
    what: source,
    error: (message) => new BundleError("malformed", message),
  });
  try {
    const first = await tar.next();
    if (first?.path !== BUNDLE_MANIFEST || first.type !== "file") {
      throw malformed(`its first entry is not ${BUNDLE_MANIFEST}`);
    }
    if (first.size > MANIFEST_MAX_BYTES) throw malformed("its manifest is larger than 64 KiB");
    const parts: Uint8Array[] = [];
    await tar.readData((chunk) => void parts.push(chunk.slice()));
    const manifest = parseBundleManifest(new TextDecoder().decode(concatBytes(parts)), source);
    try {
      options.accept?.(manifest);
    } catch (err) {
      refused = err;
      throw err;
    }
    const expected = new Map(manifest.files.map((f) => [f.name, f]));
    const seen = new Set<string>();
    for (let entry = await tar.next(); entry; entry = await tar.next()) {
      if (entry.type !== "file") throw malformed(`entry ${entry.path} is a ${entry.type}`);
      const want = expected.get(entry.path);
      if (!want) throw malformed(`entry ${entry.path} is not in its manifest`);
      if (seen.has(entry.path)) throw malformed(`entry ${entry.path} appears twice`);
      seen.add(entry.path);
      if (entry.size !== want.size) {
        throw new BundleError(
          "file_mismatch",
          `Cannot use ${source}: ${entry.path} is ${entry.size} bytes, its manifest says ${want.size}`,
        );
      }
      const target = join(into, entry.path);
      written.push(target);
      const digest = await writeSparse(tar, target, entry.size);
      if (digest !== want.sha256) {
        throw new BundleError(
          "file_mismatch",
          `Cannot use ${source}: ${entry.path} has SHA-256 ${digest}, its manifest says ${want.sha256}`,
        );
      }
    }
    const missing = manifest.files.filter((f) => !seen.has(f.name)).map((f) => f.name);
    if (missing.length > 0) throw malformed(`it lacks ${missing.join(", ")}`);
    return manifest;
  } catch (err) {
    await tar.cancel();
    for (const p of written) await Deno.remove(p).catch(() => {});
    if (err instanceof BundleError || (refused !== undefined && err === refused)) throw err;
    throw new BundleError("malformed", `Cannot use ${source}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** The size of the runs of zeros {@linkcode writeSparse} leaves unwritten. */
const SPARSE_RUN = 1 << 20;

/**
 * Writes the current entry's `size` bytes from `tar` to a new file, skipping zero chunks;
 * returns the SHA-256.
 */
async function writeSparse(tar: TarReader, path: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  using out = await Deno.open(path, { write: true, createNew: true, mode: 0o644 });
  let position = 0;
  await tar.readData(async (chunk) => {
    hash.update(chunk);
    // A decompressed chunk may be many MiB; runs of zeros are found per MiB.
    for (let at = 0; at < chunk.length; at += SPARSE_RUN) {
      const run = chunk.subarray(at, at + SPARSE_RUN);
      if (!isAllZero(run)) {
        await out.seek(position, Deno.SeekMode.Start);
        await writeAll(out, run);
      }
      position += run.length;
    }
  });
  await out.truncate(size);
  return hash.digest("hex");
}

function isAllZero(bytes: Uint8Array): boolean {
  // Eight bytes at a time where aligned.
  const words = bytes.byteOffset % 8 === 0
    ? new BigUint64Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 8))
    : undefined;
  let i = 0;
  if (words) {
    for (const w of words) if (w !== 0n) return false;
    i = words.length * 8;
  }
  for (; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** What {@linkcode writeBundle} made. */
export interface WrittenBundle {
  /** The manifest inside. */
  manifest: BundleManifest;
  /** SHA-256 of the bundle file (the digest to pin). */
  sha256: string;
}

/**
 * Writes the regular files of the version folder `dir` as a bundle at `out`.
 *
 * @throws {BundleError} `malformed` when a file name cannot go into a bundle.
 */
export async function writeBundle(
  dir: string,
  out: string,
  info: {
    arch: BundleManifest["arch"];
    assetsVersion: string;
    /** Bytes of the files archived so far, of `total` (progress of the slow part). */
    onProgress?: (done: number, total: number) => void;
  },
): Promise<WrittenBundle> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  names.sort();
  const files: BundleFile[] = [];
  for (const name of names) {
    const size = (await Deno.stat(join(dir, name))).size;
    files.push({ name, size, sha256: await sha256File(join(dir, name)) });
  }
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    formatVersion: BUNDLE_FORMAT_VERSION,
    arch: info.arch,
    assetsVersion: info.assetsVersion,
    files,
  };
  // Check it as a reader would, so a bundle we write is always one we can read.
  const manifestText = JSON.stringify(manifest, null, 2) + "\n";
  parseBundleManifest(manifestText, `the bundle of ${dir}`);
  // No time in the archive: the same files make the same bundle, byte for byte (and digest).
  const mtime = 0;
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  async function* tar(): AsyncGenerator<Uint8Array<ArrayBuffer>> {
    const m = new TextEncoder().encode(manifestText);
    yield encodeHeader({ name: BUNDLE_MANIFEST, size: m.length, mode: 0o644, mtime });
    yield m;
    yield new Uint8Array(padding(m.length));
    for (const f of files) {
      yield encodeHeader({ name: f.name, size: f.size, mode: 0o644, mtime });
      using file = await Deno.open(join(dir, f.name));
      for await (const chunk of file.readable) {
        done += chunk.length;
        info.onProgress?.(done, total);
        yield chunk;
      }
      yield new Uint8Array(padding(f.size));
    }
    yield new Uint8Array(2 * BLOCK);
  }
  using target = await Deno.open(out, { write: true, create: true, truncate: true });
  await ReadableStream.from(tar()).pipeThrough(new CompressionStream("gzip")).pipeTo(
    target.writable,
  );
  return { manifest, sha256: await sha256File(out) };
}
