/**
 * Where an image comes from, and the streams its blobs are read through.
 *
 * References:
 * - `oci:DIR[:TAG]`: an OCI image layout (`DIR/oci-layout`, `DIR/index.json`,
 *   `DIR/blobs/sha256/…`), as `umoci` and `skopeo copy … oci:DIR:TAG` write it; the tag is an
 *   index entry's `org.opencontainers.image.ref.name`, optional when the index has one entry.
 * - `docker-archive:FILE[:NAME:TAG]`: a `docker save` (or `skopeo copy … docker-archive:`)
 *   tarball: `manifest.json`, the config and layer tars; NAME:TAG picks one of several images.
 * - Anything else (or `docker://REF`): a registry reference (`registry.ts`).
 * As in skopeo, the first `:` after the transport ends the path.
 *
 * Every blob is verified while it is read: its size and digest when the source names them, and
 * each layer's uncompressed bytes against the config's `rootfs.diff_ids`, so the config digest
 * identifies the filesystem whatever the compression or the source.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { createGunzip, createZstdDecompress } from "node:zlib";
import { join } from "node:path";
import { ImageError } from "./errors.ts";
import {
  checkDigest,
  type Descriptor,
  documentMediaType,
  type ImageConfig,
  type ImageManifest,
  type ImagePlatform,
  isIndex,
  isManifest,
  type LayerCompression,
  layerCompression,
  MAX_JSON_BYTES,
  parseConfig,
  parseDockerArchiveManifest,
  parseIndex,
  parseJsonObject,
  parseManifest,
  selectPlatform,
} from "./manifest.ts";
import { TarReader } from "../io/mod.ts";

/** Progress of an image's conversion, one line each. */
export interface ImageProgress {
  /** What is happening. */
  text: string;
  /** 0..1 for the current step, when known. */
  fraction?: number;
}

/** Where a registry reference is resolved (`registry.ts` over `oci/`'s client). */
export type RegistryResolver = (
  ref: string,
  options: {
    blobsDir: string;
    onProgress: (p: ImageProgress) => void;
    /** The guest's platform: an index is followed to it, a config must be it. */
    platform: ImagePlatform;
  },
) => Promise<ResolvedImage>;

/** A parsed image reference. */
export type ImageReference =
  | { kind: "oci"; dir: string; tag?: string; text: string }
  | { kind: "docker-archive"; file: string; name?: string; text: string }
  | { kind: "registry"; ref: string; text: string };

/** Parses `text`; see the module doc for the forms. */
export function parseImageReference(text: string): ImageReference {
  const bad = (why: string) =>
    new ImageError(
      "invalid_reference",
      `Cannot use image ${JSON.stringify(text)}: ${why} (expected oci:DIR[:TAG], ` +
        "docker-archive:FILE or a registry reference like python:3.12-slim)",
    );
  if (text.trim() === "") throw bad("it is empty");
  for (const [prefix, kind] of [["oci:", "oci"], ["docker-archive:", "docker-archive"]] as const) {
    if (!text.startsWith(prefix)) continue;
    const rest = text.slice(prefix.length);
    const colon = rest.indexOf(":");
    const path = colon < 0 ? rest : rest.slice(0, colon);
    const extra = colon < 0 ? undefined : rest.slice(colon + 1);
    if (path === "") throw bad("the path is empty");
    if (extra === "") throw bad(`nothing follows the ":" after ${path}`);
    if (kind === "oci") {
      return { kind, dir: path, ...(extra !== undefined ? { tag: extra } : {}), text };
    }
    return { kind, file: path, ...(extra !== undefined ? { name: extra } : {}), text };
  }
  const ref = text.startsWith("docker://") ? text.slice("docker://".length) : text;
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(ref) || ref.includes(" ")) {
    throw bad("it is not a registry reference");
  }
  return { kind: "registry", ref, text };
}

/** One layer as a source hands it out. */
export interface SourceLayer {
  /** 1-based position, bottom first. */
  index: number;
  /** Short name for messages: `layer 2 (sha256:ab12cd34ef56)`. */
  label: string;
  /** The blob's digest and size when the source names them (not for `docker save` tars). */
  blob?: { digest: string; size: number };
  /** The compression (`detect`: look at the first bytes). */
  compression: LayerCompression | "detect";
  /** The config's digest of the uncompressed tar. */
  diffId: string;
  /** Opens the raw blob bytes. */
  open(): Promise<ReadableStream<Uint8Array>>;
}

/** An image whose manifest and config have been read and checked. */
export interface ResolvedImage {
  /** The reference as given. */
  reference: string;
  /** The manifest's digest, when the source has one (not `docker save` archives). */
  manifestDigest?: string;
  /** The config's digest: the identity of the image's filesystem and settings. */
  configDigest: string;
  /** The config. */
  config: ImageConfig;
  /** The layers, bottom first. */
  layers: SourceLayer[];
}

/** Short digest for messages. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 19);
}

/** A transform that hashes and counts bytes and fails on a size or digest mismatch. */
export function verifying(
  expect: { digest?: string; size?: number },
  what: string,
): TransformStream<Uint8Array, Uint8Array> {
  const hash = createHash("sha256");
  let bytes = 0;
  return new TransformStream({
    transform(chunk, controller) {
      bytes += chunk.length;
      if (expect.size !== undefined && bytes > expect.size) {
        throw new ImageError(
          "digest_mismatch",
          `Cannot read ${what}: it is longer than the ${expect.size} bytes its descriptor says`,
        );
      }
      hash.update(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      if (expect.size !== undefined && bytes !== expect.size) {
        throw new ImageError(
          "digest_mismatch",
          `Cannot read ${what}: it has ${bytes} bytes, its descriptor says ${expect.size} ` +
            "(truncated or corrupt)",
        );
      }
      const got = `sha256:${hash.digest("hex")}`;
      if (expect.digest !== undefined && got !== expect.digest) {
        throw new ImageError(
          "digest_mismatch",
          `Cannot read ${what}: its bytes hash to ${shortDigest(got)}, not ` +
            `${shortDigest(expect.digest)} (corrupt)`,
        );
      }
    },
  });
}

/** Fails once the budget's bytes are used up (a decompression bomb). */
function bounded(
  budget: ExpansionBudget,
  what: string,
): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      budget.left -= chunk.length;
      if (budget.left < 0) {
        throw new ImageError(
          "too_large",
          `Cannot unpack ${what}: the layers expand past ${budget.label} ` +
            "(a decompression bomb, or use a larger --disk-size)",
        );
      }
      controller.enqueue(chunk);
    },
  });
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** Reads the first bytes to tell the compression, and hands the whole stream on. */
async function sniff(
  stream: ReadableStream<Uint8Array>,
): Promise<[LayerCompression, ReadableStream<Uint8Array>]> {
  const reader = stream.getReader();
  const head: Uint8Array[] = [];
  let have = 0;
  while (have < 4) {
    const { value, done } = await reader.read();
    if (done) break;
    head.push(value);
    have += value.length;
  }
  const first = new Uint8Array(await new Blob(head as Uint8Array<ArrayBuffer>[]).arrayBuffer());
  const starts = (m: number[]) => m.every((b, i) => first[i] === b);
  const kind: LayerCompression = starts(GZIP_MAGIC) ? "gzip" : starts(ZSTD_MAGIC) ? "zstd" : "none";
  const rest = new ReadableStream<Uint8Array>({
    start(c) {
      if (first.length) c.enqueue(first);
    },
    async pull(c) {
      const { value, done } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return [kind, rest];
}

/** Largest piece handed to the decompressor at once (bounds one step's output: ~1000x). */
const INFLATE_PIECE = 16 * 1024;
/** Size of the decompressor's output pieces. */
const INFLATE_CHUNK = 256 * 1024;

/**
 * A web stream over node's gunzip or zstd decompressor (which also reads multi-member gzip,
 * unlike `DecompressionStream`). Written here rather than with `Duplex.toWeb`, whose adapter
 * throws from inside node's stream when the web side is cancelled (a failed layer).
 */
function decompressor(kind: LayerCompression): TransformStream<Uint8Array, Uint8Array> | undefined {
  if (kind === "none") return undefined;
  // Larger output pieces than zlib's 16 KiB: fewer hand-offs (gunzip of a Debian layer: 4.0 s
  // → 1.5 s here).
  const z = kind === "gzip"
    ? createGunzip({ chunkSize: INFLATE_CHUNK })
    : createZstdDecompress({ chunkSize: INFLATE_CHUNK });
  let failed: Error | undefined;
  let out: TransformStreamDefaultController<Uint8Array> | undefined;
  z.on("data", (d: Uint8Array) => {
    try {
      out?.enqueue(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    } catch {
      // The web side was cancelled: nothing reads this any more.
    }
  });
  z.on("error", (err: Error) => failed ??= err);
  const write = (piece: Uint8Array) =>
    new Promise<void>((resolve, reject) => {
      z.write(piece, (err?: Error | null) => (err ?? failed) ? reject(err ?? failed) : resolve());
    });
  return new TransformStream({
    start(controller) {
      out = controller;
    },
    async transform(chunk) {
      for (let off = 0; off < chunk.length; off += INFLATE_PIECE) {
        await write(chunk.subarray(off, off + INFLATE_PIECE));
      }
    },
    flush() {
      return new Promise<void>((resolve, reject) => {
        if (failed) return reject(failed);
        z.once("end", () => failed ? reject(failed) : resolve());
        z.once("error", reject);
        z.end();
      });
    },
    cancel() {
      z.destroy();
    },
  });
}

/** Uncompressed bytes all layers of an image may still expand to; shared by its layers. */
export interface ExpansionBudget {
  /** Bytes left. */
  left: number;
  /** The bound in words, e.g. "8192 MiB (twice the 4096 MiB disk)". */
  label: string;
}

/** Options of {@linkcode openLayerTar}. */
export interface OpenLayerOptions {
  /** The expansion budget, decremented as bytes come out of the decompressor. */
  budget: ExpansionBudget;
  /** The image, for messages. */
  image: string;
}

/**
 * The layer's uncompressed tar as a {@linkcode TarReader}: blob verified (digest, size),
 * decompressed, bounded, and checked against its diff id.
 */
export async function openLayerTar(
  layer: SourceLayer,
  options: OpenLayerOptions,
): Promise<TarReader> {
  const what = `${options.image}, ${layer.label}`;
  let stream = await layer.open();
  if (layer.blob) stream = stream.pipeThrough(verifying(layer.blob, what));
  let kind = layer.compression;
  if (kind === "detect") [kind, stream] = await sniff(stream);
  const inflate = decompressor(kind);
  if (inflate) stream = stream.pipeThrough(inflate);
  stream = stream
    .pipeThrough(bounded(options.budget, what))
    .pipeThrough(verifying({ digest: layer.diffId }, `${what}, uncompressed`));
  return layerReader(stream, what);
}

/** A tar reader whose malformed archives are {@linkcode ImageError} `bad_layer`. */
export function layerReader(stream: ReadableStream<Uint8Array>, what: string): TarReader {
  return new TarReader(stream, { what, error: (m) => new ImageError("bad_layer", m) });
}

/**
 * After a layer failed to unpack: the blob's digest mismatch when that is the cause (a corrupt
 * blob decompresses to garbage that fails earlier, in the tar reader, than the digest check at
 * its end), else `undefined`.
 */
export async function corruptBlobError(
  layer: SourceLayer,
  image: string,
): Promise<ImageError | undefined> {
  const what = `${image}, ${layer.label}`;
  try {
    let stream = await layer.open();
    if (layer.blob) stream = stream.pipeThrough(verifying(layer.blob, what));
    else {
      let kind = layer.compression;
      if (kind === "detect") [kind, stream] = await sniff(stream);
      const inflate = decompressor(kind as LayerCompression);
      if (inflate) stream = stream.pipeThrough(inflate);
      stream = stream.pipeThrough(verifying({ digest: layer.diffId }, `${what}, uncompressed`));
    }
    for await (const _ of stream) { /* hashing */ }
    return undefined;
  } catch (err) {
    if (err instanceof ImageError && err.code === "digest_mismatch") return err;
    if (err instanceof ImageError) return undefined;
    return new ImageError(
      "digest_mismatch",
      `Cannot read ${what}: it is corrupt (${(err as Error).message})`,
    );
  }
}

/** Reads a whole small file (manifests, configs). */
async function readSmall(path: string, what: string): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new ImageError("not_found", `Cannot read ${what}: ${path} does not exist`);
    }
    throw new ImageError("not_found", `Cannot read ${what}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    const { size } = await file.stat();
    if (size > MAX_JSON_BYTES) {
      throw new ImageError(
        "bad_manifest",
        `Cannot read ${what}: it is over ${MAX_JSON_BYTES} bytes`,
      );
    }
    return await new Response(file.readable).bytes();
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Reads and verifies a small blob through `open`. */
async function readBlob(
  open: () => Promise<ReadableStream<Uint8Array>>,
  d: { digest: string; size: number },
  what: string,
): Promise<Uint8Array> {
  if (d.size > MAX_JSON_BYTES) {
    throw new ImageError("bad_manifest", `Cannot read ${what}: it is over ${MAX_JSON_BYTES} bytes`);
  }
  return await new Response((await open()).pipeThrough(verifying(d, what))).bytes();
}

async function sha256Of(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return "sha256:" + Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Blob access of an image source, for {@linkcode resolveFromManifest}. */
export interface BlobSource {
  /** The source, for messages (`oci:./img:v1`). */
  name: string;
  /** The guest's platform: an index is followed to it, a config must be it. */
  platform: ImagePlatform;
  /** Opens blob `d` (its bytes are verified by the caller). */
  open(d: Descriptor, what: string): Promise<ReadableStream<Uint8Array>>;
}

/**
 * From a manifest or index document (digest and media type known) to the resolved image:
 * indexes are followed to the guest's platform, the manifest's layers and config are checked.
 */
export async function resolveFromManifest(
  source: BlobSource,
  doc: { bytes: Uint8Array; digest: string; mediaType?: string },
): Promise<ResolvedImage> {
  let { bytes, digest } = doc;
  let declared = doc.mediaType;
  for (let depth = 0;; depth++) {
    const what = `${source.name} (${shortDigest(digest)})`;
    const json = parseJsonObject(bytes, what);
    const mediaType = documentMediaType(json, declared, what);
    if (isManifest(mediaType)) {
      const manifest = parseManifest(json, what);
      return await resolveImage(source, manifest, digest);
    }
    if (!isIndex(mediaType) || depth >= 4) {
      throw new ImageError("bad_manifest", `Cannot read ${what}: indexes nested too deep`);
    }
    const entry = selectPlatform(parseIndex(json, what), source.name, source.platform);
    bytes = await readBlob(() => source.open(entry, what), entry, `${source.name} manifest`);
    digest = entry.digest;
    declared = entry.mediaType;
  }
}

async function resolveImage(
  source: BlobSource,
  manifest: ImageManifest,
  manifestDigest: string,
): Promise<ResolvedImage> {
  const what = `${source.name} config (${shortDigest(manifest.config.digest)})`;
  const configBytes = await readBlob(
    () => source.open(manifest.config, what),
    manifest.config,
    what,
  );
  const config = parseConfig(parseJsonObject(configBytes, what), what);
  checkPlatform(config, source.name, source.platform);
  if (config.diffIds.length !== manifest.layers.length) {
    throw new ImageError(
      "bad_manifest",
      `Cannot use ${source.name}: its manifest has ${manifest.layers.length} layers, its config ` +
        `${config.diffIds.length} diff ids`,
    );
  }
  return {
    reference: source.name,
    manifestDigest,
    configDigest: manifest.config.digest,
    config,
    layers: manifest.layers.map((l, i) => ({
      index: i + 1,
      label: `layer ${i + 1} (${shortDigest(l.digest)})`,
      blob: { digest: l.digest, size: l.size },
      compression: layerCompression(l.mediaType)!,
      diffId: config.diffIds[i]!,
      open: () => source.open(l, `${source.name}, layer ${i + 1} (${shortDigest(l.digest)})`),
    })),
  };
}

/** Refuses an image of another platform than the guest's, in one line that says what to do. */
function checkPlatform(config: ImageConfig, name: string, platform: ImagePlatform): void {
  const want = platform.architecture;
  if (config.os !== "linux" || (config.architecture && config.architecture !== want)) {
    const arch = { amd64: "x86_64", arm64: "arm64" }[config.architecture ?? ""];
    throw new ImageError(
      "no_platform",
      `Cannot use ${name}: it is a ${config.os}/${config.architecture} image and the guest is ` +
        `linux/${want}` + (config.os === "linux" && arch ? ` (boot it with --arch ${arch})` : ""),
    );
  }
}

/** Opens an OCI image layout (`oci:DIR[:TAG]`). */
export async function resolveOciLayout(
  ref: { dir: string; tag?: string; text: string },
  platform: ImagePlatform,
): Promise<ResolvedImage> {
  const name = ref.text;
  const layout = parseJsonObject(await readSmall(join(ref.dir, "oci-layout"), name), name);
  if (
    typeof layout.imageLayoutVersion !== "string" || !layout.imageLayoutVersion.startsWith("1.")
  ) {
    throw new ImageError(
      "bad_manifest",
      `Cannot read ${name}: ${join(ref.dir, "oci-layout")} has layout version ` +
        `${JSON.stringify(layout.imageLayoutVersion)}, not 1.x`,
    );
  }
  const index = parseJsonObject(await readSmall(join(ref.dir, "index.json"), name), name);
  const entries = parseIndex(index, `${name} index.json`);
  const tagOf = (d: Descriptor) => d.annotations?.["org.opencontainers.image.ref.name"];
  let entry: Descriptor | undefined;
  if (ref.tag !== undefined) {
    entry = entries.find((e) => tagOf(e) === ref.tag);
  } else if (entries.length === 1) {
    entry = entries[0];
  }
  if (!entry) {
    const tags = entries.map(tagOf).filter((t) => t !== undefined);
    throw new ImageError(
      "not_found",
      ref.tag !== undefined
        ? `Cannot find tag ${ref.tag} in ${ref.dir} (it has ${tags.join(", ") || "no tags"})`
        : `Cannot pick an image in ${ref.dir}: it has ${entries.length} (name one: ` +
          `${tags.map((t) => `oci:${ref.dir}:${t}`).join(", ") || "none are tagged"})`,
    );
  }
  const source: BlobSource = {
    name,
    platform,
    open(d, what) {
      return openFile(join(ref.dir, "blobs", "sha256", checkDigest(d.digest, what).slice(7)), what);
    },
  };
  const bytes = await readBlob(() => source.open(entry, name), entry, `${name} manifest`);
  return await resolveFromManifest(source, {
    bytes,
    digest: entry.digest,
    mediaType: entry.mediaType,
  });
}

async function openFile(path: string, what: string): Promise<ReadableStream<Uint8Array>> {
  try {
    return (await Deno.open(path)).readable;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new ImageError("not_found", `Cannot read ${what}: blob ${path} is missing`);
    }
    throw new ImageError("not_found", `Cannot read ${what}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** A file's bytes from `offset` for `length`. */
async function openRange(
  path: string,
  offset: number,
  length: number,
): Promise<ReadableStream<Uint8Array>> {
  const file = await Deno.open(path);
  await file.seek(offset, Deno.SeekMode.Start);
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (left === 0) {
        file.close();
        return c.close();
      }
      const buf = new Uint8Array(Math.min(left, 1 << 20));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        return c.error(new ImageError("bad_layer", `Cannot read ${path}: it ends early`));
      }
      left -= n;
      c.enqueue(buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
}

/** Opens a `docker save` tarball (`docker-archive:FILE[:NAME:TAG]`). */
export async function resolveDockerArchive(
  ref: { file: string; name?: string; text: string },
  platform: ImagePlatform,
): Promise<ResolvedImage> {
  const name = ref.text;
  // One pass over the archive's headers: where each member's bytes are.
  const members = new Map<string, { offset: number; size: number }>();
  let stream: ReadableStream<Uint8Array>;
  try {
    stream = (await Deno.open(ref.file)).readable;
  } catch (err) {
    throw new ImageError(
      "not_found",
      `Cannot read ${name}: ${
        err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message
      }`,
    );
  }
  const tar = layerReader(stream, name);
  try {
    for (let e = await tar.next(); e; e = await tar.next()) {
      const path = e.path.replace(/^(\.\/)+/, "");
      if (e.type === "file") members.set(path, { offset: tar.dataOffset, size: e.size });
      else if (e.type === "symlink") {
        // docker save links repeated layers to their first copy.
        const target = join(path, "..", e.linkName).replace(/^(\.\/)+/, "");
        const t = members.get(target);
        if (t) members.set(path, t);
      }
    }
  } finally {
    await tar.cancel();
  }
  const member = async (path: string, what: string) => {
    const m = members.get(path.replace(/^(\.\/)+/, ""));
    if (!m) throw new ImageError("not_found", `Cannot read ${what}: ${name} has no ${path}`);
    return await openRange(ref.file, m.offset, m.size);
  };
  const smallMember = async (path: string, what: string) => {
    const m = members.get(path);
    if (m && m.size > MAX_JSON_BYTES) {
      throw new ImageError(
        "bad_manifest",
        `Cannot read ${what}: it is over ${MAX_JSON_BYTES} bytes`,
      );
    }
    return await new Response(await member(path, what)).bytes();
  };
  const images = parseDockerArchiveManifest(
    await smallMember("manifest.json", `${name} manifest.json`),
    `${name} manifest.json`,
  );
  let image = images.length === 1 && ref.name === undefined ? images[0] : undefined;
  if (ref.name !== undefined) {
    const want = ref.name.includes(":") ? ref.name : `${ref.name}:latest`;
    image = images.find((i) => i.repoTags.some((t) => t === want || t.endsWith(`/${want}`)));
  }
  if (!image) {
    const tags = images.flatMap((i) => i.repoTags);
    throw new ImageError(
      "not_found",
      ref.name !== undefined
        ? `Cannot find ${ref.name} in ${ref.file} (it has ${tags.join(", ") || "no tags"})`
        : `Cannot pick an image in ${ref.file}: it has ${images.length} (name one: ` +
          `${tags.map((t) => `docker-archive:${ref.file}:${t}`).join(", ")})`,
    );
  }
  const configBytes = await smallMember(image.config, `${name} config`);
  const configDigest = await sha256Of(configBytes);
  // `docker save` names the config by its digest; when it does, the name must match.
  const named = /([a-f0-9]{64})(\.json)?$/.exec(image.config)?.[1];
  if (named && `sha256:${named}` !== configDigest) {
    throw new ImageError(
      "digest_mismatch",
      `Cannot read ${name}: its config ${image.config} hashes to ${
        shortDigest(configDigest)
      } (corrupt)`,
    );
  }
  const config = parseConfig(parseJsonObject(configBytes, `${name} config`), `${name} config`);
  checkPlatform(config, name, platform);
  if (config.diffIds.length !== image.layers.length) {
    throw new ImageError(
      "bad_manifest",
      `Cannot use ${name}: it lists ${image.layers.length} layers, its config ` +
        `${config.diffIds.length} diff ids`,
    );
  }
  // Newer archives carry an OCI layout too; their blobs are named by digest.
  return {
    reference: name,
    configDigest,
    config,
    layers: image.layers.map((path, i) => {
      const label = `layer ${i + 1} (${path})`;
      const blobName = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(path)?.[1];
      const size = members.get(path)?.size;
      return {
        index: i + 1,
        label,
        ...(blobName && size !== undefined ? { blob: { digest: `sha256:${blobName}`, size } } : {}),
        compression: "detect" as const,
        diffId: config.diffIds[i]!,
        open: () => member(path, `${name}, ${label}`),
      };
    }),
  };
}
