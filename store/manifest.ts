/**
 * The checkpoint manifest (`checkpoints/NAME.idx`): a versioned binary file mapping every block
 * of a disk to the hash of its chunk. The layout and compatibility rule are in `docs/store.md`.
 *
 * ```
 * offset size field
 *      0    8 magic "SHURUIDX"
 *      8    2 version major (u16)          all integers little-endian
 *     10    2 version minor (u16)
 *     12    4 header length (u32, >= 96)
 *     16    4 flags (u32, none defined: must be 0)
 *     20    4 block size (u32, power of two, 4 KiB..16 MiB)
 *     24    8 disk size in bytes (u64)
 *     32    8 entry count (u64) = ceil(disk size / block size)
 *     40    8 used count (u64) = non-zero blocks
 *     48    4 metadata length (u32, <= 64 KiB)
 *     52    1 hash algorithm (1 = BLAKE3-256)
 *     53    3 reserved (0)
 *     56    8 file length (u64)
 *     64   32 checksum: BLAKE3-256 of bytes [0, 64) and [header length, file length)
 *     96  ... bitmap: ceil(entry count / 8) bytes, bit (i & 7) of byte (i >> 3) set = block i used
 *         ... hashes: used count x 32 bytes, in block order
 *         ... metadata: UTF-8 JSON object (parent name, creation time, guest architecture)
 * ```
 *
 * Decoding validates every field and the checksum before it allocates anything large, and
 * never modifies the bytes it parses.
 *
 * @module
 */

import { blake3, HASH_LEN, isZeroEntry } from "./hash.ts";
import { StoreError } from "./errors.ts";

/** Field offsets of the fixed header. */
const field = {
  MAGIC: 0,
  MAJOR: 8,
  MINOR: 10,
  HEADER_LEN: 12,
  FLAGS: 16,
  BLOCK_SIZE: 20,
  DISK_SIZE: 24,
  ENTRY_COUNT: 32,
  USED_COUNT: 40,
  META_LEN: 48,
  HASH_ALG: 52,
  RESERVED: 53,
  FILE_LEN: 56,
  CHECKSUM: 64,
} as const;

/** Length of the fixed header; readable on its own to learn sizes and version. */
export const HEADER_LEN = field.CHECKSUM + HASH_LEN;
/** `SHURUIDX` in ASCII. */
export const MAGIC = new TextEncoder().encode("SHURUIDX");
/** Major version: a reader refuses any other major. */
export const VERSION_MAJOR = 1;
/** Minor version: a reader accepts files with the same major and any minor (see docs). */
export const VERSION_MINOR = 0;
/** Hash algorithm id of BLAKE3-256. */
export const HASH_BLAKE3 = 1;
/** Smallest block size a manifest may declare. */
export const MIN_BLOCK_SIZE = 4096;
/** Largest block size a manifest may declare. */
export const MAX_BLOCK_SIZE = 16 << 20;
/** Largest disk a manifest may describe (64 TiB), so a table stays allocatable. */
export const MAX_DISK_SIZE = 2 ** 46;
/** Largest metadata section. */
export const MAX_META_LEN = 64 * 1024;

/** Descriptive fields kept next to the table (informational; nothing resolves them). */
export interface ManifestMeta {
  /** Name of the checkpoint the device started from, if any (informational only). */
  parent?: string;
  /** Creation time, milliseconds since the epoch. */
  createdAt?: number;
  /** Content identity of the base image the lineage started from, if any. */
  base?: string;
  /** Where a pulled checkpoint came from: the registry reference and manifest digest. */
  origin?: { ref: string; digest: string };
  /** The OCI image the lineage started from, with its settings (env, cwd, user, command). */
  image?: ImageMeta;
  /**
   * The guest architecture whose disk this is (`x86_64`, `arm64`), so a checkpoint boots on
   * the kernel it was made with. Absent in manifests written before arm64 guests existed: those
   * are x86_64.
   */
  arch?: string;
}

/** The image a checkpoint descends from (`shuru run --image`); settings are the runner's. */
export interface ImageMeta {
  /** The reference as given. */
  ref: string;
  /** The image config's digest. */
  config: string;
  /** The sandbox settings the image gives (a JSON object the runner reads back). */
  settings: Record<string, unknown>;
}

/** What a metadata `arch` may look like (a short lowercase token). */
const ARCH_RE = /^[a-z0-9_]{1,16}$/;

/** The decoded fixed header. */
export interface ManifestHeader {
  /** Major version. */
  major: number;
  /** Minor version. */
  minor: number;
  /** Header length in bytes. */
  headerLength: number;
  /** Block size in bytes. */
  blockSize: number;
  /** Disk size in bytes. */
  diskSize: number;
  /** Blocks in the table. */
  entryCount: number;
  /** Non-zero blocks. */
  usedCount: number;
  /** Metadata length in bytes. */
  metaLength: number;
  /** Total file length in bytes. */
  fileLength: number;
}

/**
 * A full block → hash table in memory: `entryCount` entries of 32 bytes, an all-zero entry
 * meaning "zero block". Lookups are O(1) by block index.
 */
export class BlockTable {
  /** Block size in bytes. */
  readonly blockSize: number;
  /** Disk size in bytes. */
  readonly diskSize: number;
  /** Number of blocks. */
  readonly entryCount: number;
  /** `entryCount * 32` bytes of hashes. */
  readonly hashes: Uint8Array;
  #words: Uint32Array | null;

  /**
   * Creates a table; every block is a zero block unless `hashes` is given.
   *
   * @param blockSize Block size in bytes.
   * @param diskSize Disk size in bytes.
   * @param hashes Table bytes (default: all zero blocks).
   */
  constructor(blockSize: number, diskSize: number, hashes?: Uint8Array) {
    checkGeometry(blockSize, diskSize, "create a block table");
    this.blockSize = blockSize;
    this.diskSize = diskSize;
    this.entryCount = Math.ceil(diskSize / blockSize);
    this.hashes = hashes ?? new Uint8Array(this.entryCount * HASH_LEN);
    if (this.hashes.length !== this.entryCount * HASH_LEN) {
      throw new StoreError("invalid_argument", "Cannot create a block table: wrong table length");
    }
    // Zero checks read 8 words instead of 32 bytes when the table is 4-byte aligned.
    this.#words = (this.hashes.byteOffset & 3) === 0
      ? new Uint32Array(this.hashes.buffer, this.hashes.byteOffset, this.hashes.length >>> 2)
      : null;
  }

  /** `true` when block `i` is a zero block. */
  isZero(i: number): boolean {
    const w = this.#words;
    if (w === null) return isZeroEntry(this.hashes, i * HASH_LEN);
    const o = i * 8;
    return (w[o]! | w[o + 1]! | w[o + 2]! | w[o + 3]! | w[o + 4]! | w[o + 5]! | w[o + 6]! |
      w[o + 7]!) === 0;
  }

  /** The hash of block `i`, or `null` for a zero block (a view, not a copy). */
  get(i: number): Uint8Array | null {
    if (this.isZero(i)) return null;
    const off = i * HASH_LEN;
    return this.hashes.subarray(off, off + HASH_LEN);
  }

  /** Copies entry `i` of `from` (same block size) into entry `i` of this table. */
  copyEntry(from: BlockTable, i: number): void {
    const o = i * HASH_LEN;
    for (let k = 0; k < HASH_LEN; k++) this.hashes[o + k] = from.hashes[o + k]!;
  }

  /** Sets block `i` to `hash`, or to a zero block when `hash` is `null`. */
  set(i: number, hash: Uint8Array | null): void {
    const off = i * HASH_LEN;
    if (hash) this.hashes.set(hash, off);
    else this.hashes.fill(0, off, off + HASH_LEN);
  }

  /** Number of non-zero blocks. */
  usedCount(): number {
    let n = 0;
    for (let i = 0; i < this.entryCount; i++) if (!this.isZero(i)) n++;
    return n;
  }
}

function checkGeometry(blockSize: number, diskSize: number, action: string): void {
  if (
    !Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new StoreError(
      "invalid_argument",
      `Cannot ${action}: block size ${blockSize} is not a power of two in 4 KiB..16 MiB`,
    );
  }
  if (!Number.isSafeInteger(diskSize) || diskSize < 0 || diskSize > MAX_DISK_SIZE) {
    throw new StoreError(
      "invalid_argument",
      `Cannot ${action}: disk size ${diskSize} is outside 0..${MAX_DISK_SIZE}`,
    );
  }
}

/** Encodes `table` and `meta` as a manifest file. */
export function encodeManifest(table: BlockTable, meta: ManifestMeta = {}): Uint8Array {
  const used = table.usedCount();
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta));
  if (metaBytes.length > MAX_META_LEN) {
    throw new StoreError("invalid_argument", "Cannot encode a manifest: metadata too large");
  }
  const bitmapLen = Math.ceil(table.entryCount / 8);
  const fileLength = HEADER_LEN + bitmapLen + used * HASH_LEN + metaBytes.length;
  const out = new Uint8Array(fileLength);
  const view = new DataView(out.buffer);
  out.set(MAGIC, field.MAGIC);
  view.setUint16(field.MAJOR, VERSION_MAJOR, true);
  view.setUint16(field.MINOR, VERSION_MINOR, true);
  view.setUint32(field.HEADER_LEN, HEADER_LEN, true);
  view.setUint32(field.FLAGS, 0, true);
  view.setUint32(field.BLOCK_SIZE, table.blockSize, true);
  view.setBigUint64(field.DISK_SIZE, BigInt(table.diskSize), true);
  view.setBigUint64(field.ENTRY_COUNT, BigInt(table.entryCount), true);
  view.setBigUint64(field.USED_COUNT, BigInt(used), true);
  view.setUint32(field.META_LEN, metaBytes.length, true);
  view.setUint8(field.HASH_ALG, HASH_BLAKE3);
  view.setBigUint64(field.FILE_LEN, BigInt(fileLength), true);
  const bitmap = out.subarray(HEADER_LEN, HEADER_LEN + bitmapLen);
  let pos = HEADER_LEN + bitmapLen;
  const src = table.hashes;
  for (let i = 0; i < table.entryCount; i++) {
    if (table.isZero(i)) continue;
    const off = i * HASH_LEN;
    bitmap[i >>> 3]! |= 1 << (i & 7);
    out.set(src.subarray(off, off + HASH_LEN), pos);
    pos += HASH_LEN;
  }
  out.set(metaBytes, pos);
  out.set(checksumOf(out, HEADER_LEN), field.CHECKSUM);
  return out;
}

function checksumOf(file: Uint8Array, headerLength: number): Uint8Array {
  return blake3(file.subarray(0, field.CHECKSUM), file.subarray(headerLength));
}

function bad(reason: string): StoreError {
  return new StoreError("bad_manifest", `Cannot read the manifest: ${reason}`);
}

function readU64(view: DataView, offset: number, what: string): number {
  const v = view.getBigUint64(offset, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${what} ${v} is too large`);
  return Number(v);
}

/**
 * Decodes and validates the fixed header alone (the first {@linkcode HEADER_LEN} bytes).
 * Does not check the checksum, which covers the whole file.
 */
export function decodeHeader(bytes: Uint8Array): ManifestHeader {
  if (bytes.length < HEADER_LEN) throw bad(`${bytes.length} bytes is shorter than the header`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw bad("bad magic (not a shuru .idx file)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = view.getUint16(field.MAJOR, true);
  const minor = view.getUint16(field.MINOR, true);
  if (major !== VERSION_MAJOR) {
    throw bad(`version ${major}.${minor} is not readable by this shuru (major ${VERSION_MAJOR})`);
  }
  const headerLength = view.getUint32(field.HEADER_LEN, true);
  if (headerLength < HEADER_LEN || headerLength > 4096) {
    throw bad(`header length ${headerLength} is outside ${HEADER_LEN}..4096`);
  }
  const flags = view.getUint32(field.FLAGS, true);
  if (flags !== 0) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const alg = view.getUint8(field.HASH_ALG);
  if (alg !== HASH_BLAKE3) throw bad(`unknown hash algorithm ${alg}`);
  const blockSize = view.getUint32(field.BLOCK_SIZE, true);
  const diskSize = readU64(view, field.DISK_SIZE, "disk size");
  try {
    checkGeometry(blockSize, diskSize, "read the manifest");
  } catch (err) {
    throw bad((err as Error).message.replace(/^Cannot read the manifest: /, ""));
  }
  const entryCount = readU64(view, field.ENTRY_COUNT, "entry count");
  if (entryCount !== Math.ceil(diskSize / blockSize)) {
    throw bad(`entry count ${entryCount} does not match disk size ${diskSize}`);
  }
  const usedCount = readU64(view, field.USED_COUNT, "used count");
  if (usedCount > entryCount) throw bad(`used count ${usedCount} exceeds entry count`);
  const metaLength = view.getUint32(field.META_LEN, true);
  if (metaLength > MAX_META_LEN) throw bad(`metadata length ${metaLength} is too large`);
  const fileLength = readU64(view, field.FILE_LEN, "file length");
  const expected = headerLength + Math.ceil(entryCount / 8) + usedCount * HASH_LEN + metaLength;
  if (fileLength !== expected) {
    throw bad(`file length field ${fileLength} does not match the table (${expected})`);
  }
  return {
    major,
    minor,
    headerLength,
    blockSize,
    diskSize,
    entryCount,
    usedCount,
    metaLength,
    fileLength,
  };
}

/** A decoded manifest. */
export interface Manifest {
  /** The fixed header. */
  header: ManifestHeader;
  /** The block table. */
  table: BlockTable;
  /** Descriptive metadata. */
  meta: ManifestMeta;
}

/** Decodes and fully validates a manifest file (header, lengths, bitmap, checksum). */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const header = decodeHeader(bytes);
  if (bytes.length !== header.fileLength) {
    throw bad(`file is ${bytes.length} bytes, header says ${header.fileLength} (truncated?)`);
  }
  const sum = checksumOf(bytes, header.headerLength);
  for (let i = 0; i < HASH_LEN; i++) {
    if (bytes[field.CHECKSUM + i] !== sum[i]) throw bad("checksum mismatch (file corrupted)");
  }
  const bitmapLen = Math.ceil(header.entryCount / 8);
  const bitmap = bytes.subarray(header.headerLength, header.headerLength + bitmapLen);
  const tail = header.entryCount & 7;
  if (tail !== 0 && (bitmap[bitmapLen - 1]! >> tail) !== 0) {
    throw bad("bitmap has bits past the end");
  }
  const table = new BlockTable(header.blockSize, header.diskSize);
  let pos = header.headerLength + bitmapLen;
  let used = 0;
  for (let i = 0; i < header.entryCount; i++) {
    if ((bitmap[i >>> 3]! & (1 << (i & 7))) === 0) continue;
    if (++used > header.usedCount) throw bad("bitmap has more blocks than the used count");
    const h = bytes.subarray(pos, pos + HASH_LEN);
    if (isZeroEntry(h, 0)) throw bad(`block ${i} has an all-zero hash`);
    table.hashes.set(h, i * HASH_LEN);
    pos += HASH_LEN;
  }
  if (used !== header.usedCount) throw bad("bitmap has fewer blocks than the used count");
  let meta: ManifestMeta;
  try {
    const parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(
      bytes.subarray(pos, pos + header.metaLength),
    ));
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error("not an object");
    }
    meta = {};
    if (typeof parsed.parent === "string") meta.parent = parsed.parent;
    if (typeof parsed.createdAt === "number") meta.createdAt = parsed.createdAt;
    if (typeof parsed.base === "string") meta.base = parsed.base;
    const o = parsed.origin;
    if (o && typeof o === "object" && typeof o.ref === "string" && typeof o.digest === "string") {
      meta.origin = { ref: o.ref, digest: o.digest };
    }
    const im = parsed.image;
    if (
      im && typeof im === "object" && typeof im.ref === "string" &&
      typeof im.config === "string" && im.settings && typeof im.settings === "object" &&
      !Array.isArray(im.settings)
    ) {
      meta.image = { ref: im.ref, config: im.config, settings: im.settings };
    }
    if (parsed.arch !== undefined) {
      if (typeof parsed.arch !== "string" || !ARCH_RE.test(parsed.arch)) {
        throw new Error(`arch ${JSON.stringify(parsed.arch)} is not an architecture name`);
      }
      meta.arch = parsed.arch;
    }
  } catch (err) {
    throw bad(`metadata is not a JSON object (${(err as Error).message})`);
  }
  return { header, table, meta };
}
