/**
 * A checkpoint as an OCI artifact (`docs/remote.md`): an OCI image manifest whose config and
 * layers carry shuru media types.
 *
 * ```
 * manifest (application/vnd.oci.image.manifest.v1+json, artifactType MEDIA.artifact)
 *   config  MEDIA.config   JSON: format version, geometry, counts (CheckpointConfig)
 *   layers  MEDIA.idx      the checkpoint's `.idx` manifest, byte for byte
 *           MEDIA.chunks   the chunk index: where each chunk lives (binary, below)
 *           MEDIA.pack     packs: chunks back to back, each raw or zstd-compressed
 *           ...            (more packs)
 * ```
 *
 * A memory checkpoint (`.idx` 2.0) is the same artifact: its RAM table, machine state and
 * description travel inside the `.idx` layer, its RAM chunks in the same packs and chunk index
 * as disk chunks. Its config says `formatVersion: 2` and `memorySize`, so a reader that knows
 * only disks refuses it in one line rather than failing on the `.idx`.
 *
 * The chunk index (all integers little-endian; sorted by pack, then offset):
 *
 * ```
 * offset size field
 *      0    8 magic "SHURUCHX"
 *      8    2 version major (1)      a reader refuses another major, accepts any minor
 *     10    2 version minor (0)
 *     12    4 header length (>= 32)  a newer minor may grow the header; readers skip it
 *     16    4 entry size (>= 48)     a newer minor may grow entries; readers skip the tail
 *     20    4 pack count             pack numbers index the manifest's MEDIA.pack layers
 *     24    8 entry count
 *     32  ... entries:  0 32 BLAKE3-256 of the chunk's (uncompressed) bytes
 *                      32  4 pack number
 *                      36  4 offset in the pack
 *                      40  4 stored length
 *                      44  1 encoding: 0 raw (length = block size), 1 zstd (< block size)
 *                      45  3 reserved (0)
 * ```
 *
 * Decoding checks every field against the manifest (pack count, pack sizes) and the config
 * (block size) before anything is read from a pack; a chunk's bytes are then checked against
 * its BLAKE3 after decoding, so no field can make a reader return wrong data.
 *
 * @module
 */

import { constants as zlib, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import type { Descriptor } from "../oci/mod.ts";
import { MEDIA_OCI_MANIFEST } from "../oci/mod.ts";
import { blake3, HASH_LEN, isZeroEntry, toHex } from "./hash.ts";
import { StoreError } from "./errors.ts";

/** Media types of the artifact. */
export const MEDIA = {
  /** The manifest's `artifactType`. */
  artifact: "application/vnd.shuru.checkpoint.v1",
  /** The config blob (JSON). */
  config: "application/vnd.shuru.checkpoint.config.v1+json",
  /** The `.idx` manifest. */
  idx: "application/vnd.shuru.checkpoint.idx.v1",
  /** The chunk index. */
  chunks: "application/vnd.shuru.checkpoint.chunks.v1",
  /** A pack of chunks. */
  pack: "application/vnd.shuru.checkpoint.pack.v1",
} as const;

/** The config blob's contents. */
export interface CheckpointConfig {
  /**
   * Format version of the artifact: 1 for a disk-only checkpoint, 2 for a memory checkpoint
   * (this code writes and reads both).
   */
  formatVersion: 1 | 2;
  /** Block (chunk) size in bytes. */
  blockSize: number;
  /** Disk size in bytes. */
  diskSize: number;
  /** Non-zero blocks. */
  usedBlocks: number;
  /** Distinct chunks. */
  chunks: number;
  /** The chunk hash (`blake3-256`). */
  hash: "blake3-256";
  /** Creation time of the checkpoint (ms since the epoch), if recorded. */
  createdAt?: number;
  /** The checkpoint's parent name at the pusher (informational). */
  parent?: string;
  /**
   * The guest architecture (`x86_64`, `arm64`): a copy of the `.idx`'s, for clients that read
   * only the config (`skopeo inspect --config`). Readers refuse a config and `.idx` that
   * disagree; the `.idx` is what boots.
   */
  arch?: string;
  /** The OCI image the checkpoint descends from, as given to `--image` (informational). */
  image?: string;
  /** Guest memory size in bytes (format 2, a memory checkpoint, only). */
  memorySize?: number;
}

/** The artifact format versions this code reads. */
export const FORMAT_VERSIONS: readonly number[] = [1, 2];

/** Chunk encodings in packs. */
export const ENCODING = { raw: 0, zstd: 1 } as const;

/** Where one chunk lives. */
export interface ChunkEntry {
  /** BLAKE3-256 of the chunk. */
  hash: Uint8Array;
  /** Pack number (position among the manifest's pack layers). */
  pack: number;
  /** Offset in the pack. */
  offset: number;
  /** Stored length. */
  length: number;
  /** {@linkcode ENCODING} value. */
  encoding: number;
}

const field = {
  MAGIC: 0,
  MAJOR: 8,
  MINOR: 10,
  HEADER_LEN: 12,
  ENTRY_SIZE: 16,
  PACK_COUNT: 20,
  ENTRY_COUNT: 24,
  ENTRIES: 32,
} as const;
const entryField = { HASH: 0, PACK: 32, OFFSET: 36, LENGTH: 40, ENCODING: 44, END: 48 } as const;
const INDEX_MAGIC = new TextEncoder().encode("SHURUCHX");
const INDEX_MAJOR = 1;
/** Chunk index entry size written by this version. */
export const ENTRY_SIZE = entryField.END;

function bad(what: string, reason: string): StoreError {
  return new StoreError("bad_manifest", `Cannot read ${what}: ${reason}`);
}

/** Encodes a chunk index (`entries` are sorted here by pack, then offset). */
export function encodeChunkIndex(entries: readonly ChunkEntry[], packCount: number): Uint8Array {
  const sorted = [...entries].sort((a, b) => a.pack - b.pack || a.offset - b.offset);
  const out = new Uint8Array(field.ENTRIES + sorted.length * ENTRY_SIZE);
  const view = new DataView(out.buffer);
  out.set(INDEX_MAGIC, field.MAGIC);
  view.setUint16(field.MAJOR, INDEX_MAJOR, true);
  view.setUint16(field.MINOR, 0, true);
  view.setUint32(field.HEADER_LEN, field.ENTRIES, true);
  view.setUint32(field.ENTRY_SIZE, ENTRY_SIZE, true);
  view.setUint32(field.PACK_COUNT, packCount, true);
  view.setBigUint64(field.ENTRY_COUNT, BigInt(sorted.length), true);
  let pos = field.ENTRIES;
  for (const e of sorted) {
    out.set(e.hash, pos + entryField.HASH);
    view.setUint32(pos + entryField.PACK, e.pack, true);
    view.setUint32(pos + entryField.OFFSET, e.offset, true);
    view.setUint32(pos + entryField.LENGTH, e.length, true);
    view.setUint8(pos + entryField.ENCODING, e.encoding);
    pos += ENTRY_SIZE;
  }
  return out;
}

/**
 * Decodes and validates a chunk index against the pack sizes of its manifest and the block
 * size: known encodings, lengths that fit the block, entries inside their pack and not
 * overlapping, no zero or repeated hash.
 */
export function decodeChunkIndex(
  bytes: Uint8Array,
  packSizes: readonly number[],
  blockSize: number,
): ChunkEntry[] {
  const what = "the checkpoint's chunk index";
  if (bytes.length < field.ENTRIES) throw bad(what, `${bytes.length} bytes is too short`);
  for (let i = 0; i < INDEX_MAGIC.length; i++) {
    if (bytes[i] !== INDEX_MAGIC[i]) throw bad(what, "bad magic (not a shuru chunk index)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = view.getUint16(field.MAJOR, true);
  if (major !== INDEX_MAJOR) {
    throw bad(what, `version ${major}.${view.getUint16(field.MINOR, true)} is not readable`);
  }
  const headerLength = view.getUint32(field.HEADER_LEN, true);
  const entrySize = view.getUint32(field.ENTRY_SIZE, true);
  const packCount = view.getUint32(field.PACK_COUNT, true);
  const count = view.getBigUint64(field.ENTRY_COUNT, true);
  if (headerLength < field.ENTRIES || headerLength > 4096) {
    throw bad(what, `header length ${headerLength}`);
  }
  if (entrySize < ENTRY_SIZE || entrySize > 4096) throw bad(what, `entry size ${entrySize}`);
  if (packCount !== packSizes.length) {
    throw bad(what, `it names ${packCount} packs, the manifest has ${packSizes.length}`);
  }
  if (BigInt(headerLength) + count * BigInt(entrySize) !== BigInt(bytes.length)) {
    throw bad(what, `${count} entries do not fill its ${bytes.length} bytes`);
  }
  const n = Number(count);
  const out: ChunkEntry[] = new Array(n);
  const seen = new Set<string>();
  let lastPack = -1;
  let lastEnd = 0;
  for (let i = 0; i < n; i++) {
    const pos = headerLength + i * entrySize;
    const hash = bytes.slice(pos + entryField.HASH, pos + entryField.HASH + HASH_LEN);
    const pack = view.getUint32(pos + entryField.PACK, true);
    const offset = view.getUint32(pos + entryField.OFFSET, true);
    const length = view.getUint32(pos + entryField.LENGTH, true);
    const encoding = view.getUint8(pos + entryField.ENCODING);
    const at = `entry ${i}`;
    if (isZeroEntry(hash, 0)) throw bad(what, `${at} has an all-zero hash`);
    const hex = toHex(hash);
    if (seen.has(hex)) throw bad(what, `${at} repeats chunk ${hex}`);
    seen.add(hex);
    if (pack >= packCount) throw bad(what, `${at} names pack ${pack} of ${packCount}`);
    if (encoding === ENCODING.raw) {
      if (length !== blockSize) throw bad(what, `${at} is raw but ${length} bytes long`);
    } else if (encoding === ENCODING.zstd) {
      if (length === 0 || length >= blockSize) {
        throw bad(what, `${at} is compressed but ${length} bytes long`);
      }
    } else throw bad(what, `${at} has unknown encoding ${encoding}`);
    if (pack < lastPack || (pack === lastPack && offset < lastEnd)) {
      throw bad(what, `${at} is out of order or overlaps the one before`);
    }
    if (offset + length > packSizes[pack]!) {
      throw bad(what, `${at} ends past its ${packSizes[pack]}-byte pack`);
    }
    lastPack = pack;
    lastEnd = offset + length;
    out[i] = { hash, pack, offset, length, encoding };
  }
  return out;
}

/** Options of {@linkcode encodeChunk}. */
export interface EncodeChunkOptions {
  /** Compress with zstd (stored raw anyway when it does not shrink). @default true */
  compress?: boolean;
  /** zstd level. @default 3 */
  level?: number;
}

/** The stored form of one chunk: zstd when that is smaller, else the raw bytes. */
export function encodeChunk(
  data: Uint8Array,
  options: EncodeChunkOptions = {},
): { bytes: Uint8Array; encoding: number } {
  if (options.compress === false) return { bytes: data, encoding: ENCODING.raw };
  const z = zstdCompressSync(data, {
    params: { [zlib.ZSTD_c_compressionLevel]: options.level ?? 3 },
  });
  if (z.length < data.length) {
    return { bytes: new Uint8Array(z.buffer, z.byteOffset, z.length), encoding: ENCODING.zstd };
  }
  return { bytes: data, encoding: ENCODING.raw };
}

/**
 * Turns a chunk's stored bytes back into the chunk and checks it against its hash.
 * @throws {StoreError} `corrupt_chunk` when it does not decode or does not match.
 */
export function decodeChunk(entry: ChunkEntry, stored: Uint8Array, blockSize: number): Uint8Array {
  let data: Uint8Array;
  if (entry.encoding === ENCODING.raw) {
    data = stored;
  } else {
    try {
      const z = zstdDecompressSync(stored, { maxOutputLength: blockSize });
      data = new Uint8Array(z.buffer, z.byteOffset, z.length);
    } catch (err) {
      throw new StoreError(
        "corrupt_chunk",
        `Cannot read chunk ${toHex(entry.hash)}: its compressed bytes do not decode ` +
          `(${(err as Error).message})`,
        { cause: err },
      );
    }
  }
  if (data.length !== blockSize) {
    throw new StoreError(
      "corrupt_chunk",
      `Cannot read chunk ${toHex(entry.hash)}: ${data.length} bytes, expected ${blockSize}`,
    );
  }
  const actual = blake3(data);
  for (let i = 0; i < HASH_LEN; i++) {
    if (actual[i] !== entry.hash[i]) {
      throw new StoreError(
        "corrupt_chunk",
        `Cannot read chunk ${toHex(entry.hash)}: its bytes from the registry hash to ` +
          toHex(actual),
      );
    }
  }
  return data;
}

/** The parts of a checkpoint manifest, found by media type. */
export interface ParsedArtifact {
  /** The config descriptor. */
  config: Descriptor;
  /** The `.idx` layer. */
  idx: Descriptor;
  /** The chunk index layer. */
  chunks: Descriptor;
  /** Pack layers, in order (pack numbers index this list). */
  packs: Descriptor[];
}

function asDescriptor(v: unknown, where: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  if (
    !d || typeof d !== "object" || typeof d.mediaType !== "string" ||
    typeof d.digest !== "string" || !/^sha256:[a-f0-9]{64}$/.test(d.digest) ||
    typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0
  ) {
    throw new StoreError(
      "bad_manifest",
      `Cannot read the checkpoint's manifest: ${where} is not a valid descriptor`,
    );
  }
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}

/**
 * Parses a fetched manifest as a shuru checkpoint; refuses (with what it is instead) anything
 * else: another manifest type, a container image, an artifact of another kind.
 */
export function parseArtifact(bytes: Uint8Array, mediaType: string, ref: string): ParsedArtifact {
  const notOurs = (what: string) =>
    new StoreError(
      "not_checkpoint",
      `Cannot use ${ref} as a checkpoint: ${what}, not a shuru checkpoint ` +
        `(config ${MEDIA.config}); push one with \`shuru checkpoint push\``,
    );
  let body: {
    schemaVersion?: unknown;
    mediaType?: unknown;
    config?: unknown;
    layers?: unknown;
  };
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw notOurs("its manifest is not JSON");
  }
  const type = typeof body.mediaType === "string" ? body.mediaType : mediaType;
  if (type !== MEDIA_OCI_MANIFEST) throw notOurs(`it is a ${type || "manifest of unknown type"}`);
  if (body.schemaVersion !== 2) throw notOurs("its manifest is not schema version 2");
  const config = asDescriptor(body.config, "the config");
  if (config.mediaType !== MEDIA.config) {
    throw notOurs(`its config is ${config.mediaType} (a container image?)`);
  }
  if (!Array.isArray(body.layers)) throw notOurs("its manifest has no layers");
  const layers = body.layers.map((l, i) => asDescriptor(l, `layer ${i}`));
  const one = (type: string) => {
    const found = layers.filter((l) => l.mediaType === type);
    if (found.length !== 1) {
      throw new StoreError(
        "bad_manifest",
        `Cannot use ${ref} as a checkpoint: it has ${found.length} layers of type ${type}, ` +
          "expected one",
      );
    }
    return found[0]!;
  };
  // Layers of other types (later additions such as memory images) are left to their readers.
  return {
    config,
    idx: one(MEDIA.idx),
    chunks: one(MEDIA.chunks),
    packs: layers.filter((l) => l.mediaType === MEDIA.pack),
  };
}

/** Parses and validates the config blob. */
export function parseConfig(bytes: Uint8Array, ref: string): CheckpointConfig {
  const fail = (why: string) =>
    new StoreError("bad_manifest", `Cannot use ${ref} as a checkpoint: its config ${why}`);
  let c: Partial<CheckpointConfig> & Record<string, unknown>;
  try {
    c = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw fail("is not JSON");
  }
  if (typeof c !== "object" || c === null) throw fail("is not an object");
  if (c.formatVersion !== 1 && c.formatVersion !== 2) {
    throw fail(
      `has format version ${c.formatVersion}, this shuru reads ${FORMAT_VERSIONS.join(" and ")} ` +
        "(upgrade shuru to use it)",
    );
  }
  for (const k of ["blockSize", "diskSize", "usedBlocks", "chunks"] as const) {
    const v = c[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw fail(`has a bad ${k}`);
  }
  if (c.hash !== "blake3-256") throw fail(`names hash ${c.hash}, this shuru knows blake3-256`);
  if (c.formatVersion === 2) {
    const m = c.memorySize;
    if (typeof m !== "number" || !Number.isSafeInteger(m) || m <= 0 || m % 4096 !== 0) {
      throw fail("has format version 2 (memory) but a bad memorySize");
    }
  } else if (c.memorySize !== undefined) {
    throw fail("has a memorySize but format version 1 (disk only)");
  }
  const out: CheckpointConfig = {
    formatVersion: c.formatVersion,
    blockSize: c.blockSize!,
    diskSize: c.diskSize!,
    usedBlocks: c.usedBlocks!,
    chunks: c.chunks!,
    hash: "blake3-256",
  };
  if (typeof c.createdAt === "number") out.createdAt = c.createdAt;
  if (typeof c.parent === "string") out.parent = c.parent;
  if (typeof c.arch === "string") out.arch = c.arch;
  if (typeof c.image === "string") out.image = c.image;
  if (c.formatVersion === 2) out.memorySize = c.memorySize!;
  return out;
}

/** Builds the manifest JSON for a checkpoint artifact. */
export function buildArtifact(parts: ParsedArtifact, annotations: Record<string, string> = {}) {
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_OCI_MANIFEST,
    artifactType: MEDIA.artifact,
    config: parts.config,
    layers: [parts.idx, parts.chunks, ...parts.packs],
    ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
  };
  return new TextEncoder().encode(JSON.stringify(manifest));
}
