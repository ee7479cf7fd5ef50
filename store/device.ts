/**
 * The copy-on-write device: a {@linkcode BlockBackend} over a read-only lower layer (a base
 * image file or a checkpoint's block table) with writes going to per-instance overlay files.
 *
 * Design (see `docs/store.md`):
 * - One `Uint16Array` entry per block says where the block's current bytes live: the lower
 *   layer, "zero", or overlay layer k. Reads and writes are O(1) per block, and the map costs
 *   2 bytes per block (512 KiB for a 16 GiB disk at 64 KiB blocks).
 * - Overlay data lives in sparse files in the instance folder, never in RAM, so a guest writing
 *   gigabytes grows the page cache, not this process.
 * - {@linkcode CowDevice.snapshot} briefly holds new writes, waits for writes in flight, copies
 *   the block map and starts a new overlay layer. The frozen layers are never written again, so
 *   a snapshot can be saved while the guest keeps writing.
 * - All connections share one device, so every completed write is visible to all
 *   (`multiConn`). Writes to the same block are serialized by a per-block FIFO lock, which makes
 *   partial-block read-modify-write safe.
 *
 * @module
 */

import { join } from "node:path";
import type { ImageMeta } from "./manifest.ts";
import type { BlockBackend, Extent, WriteOptions } from "../nbd/mod.ts";
import type { BlockTable } from "./manifest.ts";
import type { ChunkSource } from "./chunk_source.ts";
import { StoreError } from "./errors.ts";
import { isZero, toHex } from "./hash.ts";
import { PositionalFile } from "./file_io.ts";

/** Block-map value: the block reads from the lower layer. */
export const WHERE_LOWER = 0;
/** Block-map value: the block reads as zeros. */
export const WHERE_ZERO = 1;
/** Block-map values from here on name overlay layer `value - WHERE_LAYER0`. */
export const WHERE_LAYER0 = 2;
const MAX_LAYERS = 0xffff - WHERE_LAYER0;

/** The read-only layer under the overlay. */
export interface LowerLayer {
  /** What the lower layer is. */
  readonly kind: "base" | "checkpoint";
  /** The base file path or checkpoint name, for logs and errors. */
  readonly name: string;
  /** Bytes the lower layer covers; past this it reads as zeros. */
  readonly size: number;
  /** Fills all of `dst` with the lower layer's bytes at `offset` (zeros past its end). */
  read(offset: number, dst: Uint8Array): Promise<void>;
  /** `true` when block `index` (of `blockSize`) is known to read as zeros without I/O. */
  isZeroBlock(index: number, blockSize: number): boolean;
  /** Releases resources. */
  close(): void;
}

/** A lower layer reading a raw base image file (lazily, with pread). */
export class BaseLower implements LowerLayer {
  /** Always "base". */
  readonly kind = "base" as const;
  /** Path of the base image. */
  readonly name: string;
  /** Base image size in bytes. */
  readonly size: number;
  /** `stat` of the base when opened (its identity for the base-hash cache). */
  readonly stat: Deno.FileInfo;
  /** The open file. */
  readonly file: PositionalFile;

  private constructor(path: string, stat: Deno.FileInfo, file: PositionalFile) {
    this.name = path;
    this.size = stat.size;
    this.stat = stat;
    this.file = file;
  }

  /** Opens the base image at `path` read-only. Reads nothing. */
  static async open(path: string): Promise<BaseLower> {
    const file = await PositionalFile.open(path, "r");
    try {
      const stat = await Deno.stat(path);
      if (!stat.isFile) throw new Error("not a regular file");
      return new BaseLower(path, stat, file);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** Fills all of `dst` from the file at `offset`, zeros past its end. */
  async read(offset: number, dst: Uint8Array): Promise<void> {
    const n = offset >= this.size ? 0 : Math.min(dst.length, this.size - offset);
    const got = n > 0 ? await this.file.read(dst.subarray(0, n), offset) : 0;
    if (got < dst.length) dst.fill(0, got);
  }

  /** Blocks past the end of the base read as zeros. */
  isZeroBlock(index: number, blockSize: number): boolean {
    return index * blockSize >= this.size;
  }

  /** Closes the file. */
  close(): void {
    this.file.close();
  }
}

/** Options of {@linkcode CheckpointLower}. */
export interface CheckpointLowerOptions {
  /** Verified chunks kept in memory for repeated small reads (default 64). */
  cacheChunks?: number;
  /** Called once per corrupt chunk with a one-line description. */
  log?: (line: string) => void;
}

/** A lower layer reading a checkpoint's chunks, each verified against its hash. */
export class CheckpointLower implements LowerLayer {
  /** Always "checkpoint". */
  readonly kind = "checkpoint" as const;
  /** Checkpoint name. */
  readonly name: string;
  /** Disk size of the checkpoint. */
  readonly size: number;
  /** The checkpoint's block table. */
  readonly table: BlockTable;
  #chunks: ChunkSource;
  #cache = new Map<string, Uint8Array>();
  #cacheMax: number;
  #log: (line: string) => void;
  #logged = new Set<string>();

  /**
   * @param name Checkpoint name (or registry reference, for logs).
   * @param table Its block table.
   * @param chunks Where its chunks come from (the local store, or a remote source).
   * @param options Cache size and logger.
   */
  constructor(
    name: string,
    table: BlockTable,
    chunks: ChunkSource,
    options: CheckpointLowerOptions = {},
  ) {
    this.name = name;
    this.table = table;
    this.size = table.diskSize;
    this.#chunks = chunks;
    this.#cacheMax = options.cacheChunks ?? 64;
    this.#log = options.log ?? ((line) => console.error(line));
  }

  /** Fills all of `dst` with the checkpoint's bytes at `offset`, zeros past its end. */
  async read(offset: number, dst: Uint8Array): Promise<void> {
    const bs = this.table.blockSize;
    const end = Math.min(offset + dst.length, this.size);
    if (end < offset + dst.length) dst.fill(0, Math.max(0, end - offset));
    const jobs: Promise<void>[] = [];
    for (let pos = offset; pos < end;) {
      const index = Math.floor(pos / bs);
      const blockStart = index * bs;
      const blockEnd = Math.min(blockStart + bs, end);
      const hash = this.table.get(index);
      if (hash) {
        const from = pos;
        jobs.push(
          this.#block(index, hash).then((data) => {
            dst.set(data.subarray(from - blockStart, blockEnd - blockStart), from - offset);
          }),
        );
      } else {
        dst.fill(0, pos - offset, blockEnd - offset);
      }
      pos = blockEnd;
    }
    await Promise.all(jobs);
  }

  async #block(index: number, hash: Uint8Array): Promise<Uint8Array> {
    const hex = toHex(hash);
    const cached = this.#cache.get(hex);
    if (cached) {
      this.#cache.delete(hex);
      this.#cache.set(hex, cached);
      return cached;
    }
    let data: Uint8Array;
    try {
      data = await this.#chunks.read(hash, this.table.blockSize);
    } catch (err) {
      if (err instanceof StoreError && err.code === "corrupt_chunk" && !this.#logged.has(hex)) {
        this.#logged.add(hex);
        this.#log(
          `shuru: corrupt chunk ${hex} (block ${index} of checkpoint "${this.name}"): ` +
            `${err.message}; reads of this block fail with an I/O error`,
        );
      }
      throw err;
    }
    this.#cache.set(hex, data);
    if (this.#cache.size > this.#cacheMax) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    return data;
  }

  /** Zero entries and blocks past the table read as zeros. */
  isZeroBlock(index: number, _blockSize: number): boolean {
    return index >= this.table.entryCount || this.table.get(index) === null;
  }

  /** Makes sure the chunks of blocks `indices` are in the local store (for a save). */
  async ensureLocal(indices: readonly number[]): Promise<void> {
    if (!this.#chunks.ensureLocal) return;
    const hashes: Uint8Array[] = [];
    for (const i of indices) {
      const h = this.table.get(i);
      if (h) hashes.push(h);
    }
    await this.#chunks.ensureLocal(hashes, this.table.blockSize);
  }

  /** Drops the cache and closes the chunk source. */
  close(): void {
    this.#cache.clear();
    this.#chunks.close?.();
  }
}

/** One overlay file. Layer k is written only while it is the active layer. */
export interface OverlayLayer {
  /** Index of the layer (block-map value minus {@linkcode WHERE_LAYER0}). */
  readonly index: number;
  /** Path of its sparse file. */
  readonly path: string;
  /** The open file. */
  readonly file: PositionalFile;
  /** Reads in flight on the file (it is closed only when none are). */
  readers: number;
  /** No block points at the layer any more: delete it once no read uses it. */
  retired: boolean;
}

/** What a save needs from a frozen device state. */
export interface FrozenState {
  /** The block map at the moment of the snapshot. */
  readonly where: Uint16Array;
  /** The layers the map can point at (all frozen: never written again). */
  readonly layers: readonly OverlayLayer[];
}

/** The outcome of a save, recorded by the device so the next save copies unchanged hashes. */
export interface SavedState {
  /** The block map the save was taken from. */
  where: Uint16Array;
  /** The table it produced. */
  table: BlockTable;
  /** The checkpoint name it was saved as. */
  name: string;
}

/** Saves a snapshot; provided by the store. */
export type SnapshotSaver = (
  device: CowDevice,
  frozen: FrozenState,
  name: string,
  options: SaveOptions,
) => Promise<SaveResult>;

/** Options of a save. */
export interface SaveOptions {
  /** Replace an existing checkpoint of that name (default: refuse). */
  overwrite?: boolean;
  /** The image the disk descends from, recorded in the manifest (`run --image`). */
  image?: ImageMeta;
}

/** What a save did. */
export interface SaveResult {
  /** Checkpoint name. */
  name: string;
  /** Blocks hashed during this save (dirty since the last save, or base blocks ingested). */
  hashedBlocks: number;
  /** Chunks newly written to the store. */
  newChunks: number;
  /** Bytes of newly written chunks. */
  newBytes: number;
  /** Non-zero blocks in the checkpoint. */
  usedBlocks: number;
  /** Size of the manifest file in bytes. */
  manifestBytes: number;
  /** Wall time in milliseconds. */
  elapsedMs: number;
  /** Where the time went (milliseconds; phases overlap, so they need not add up). */
  phases: {
    /** Hashing blocks (BLAKE3). */
    hashMs: number;
    /** Creating and writing new chunk files. */
    writeMs: number;
    /** fdatasync of chunks, renames and folder fsyncs. */
    syncMs: number;
    /** Encoding and publishing the manifest. */
    manifestMs: number;
  };
}

/** Options of {@linkcode CowDevice}. */
export interface CowDeviceOptions {
  /** Device size in bytes. */
  size: number;
  /** Block size in bytes (a checkpoint lower dictates its own). */
  blockSize: number;
  /** Folder for the overlay files (the instance folder). */
  overlayDir: string;
  /** Refuse writes. */
  readOnly?: boolean;
  /** Saves snapshots (the store provides it). */
  saver: SnapshotSaver;
  /** Called when the device closes (the store drops its lease). */
  onClose?: () => Promise<void>;
}

/** A consistent, frozen view of a device, savable while the device keeps taking writes. */
export class DeviceSnapshot {
  #device: CowDevice;
  #frozen: FrozenState;
  #saver: SnapshotSaver;
  #release: () => void;

  /** @internal Created by {@linkcode CowDevice.snapshot}. */
  constructor(device: CowDevice, frozen: FrozenState, saver: SnapshotSaver, release: () => void) {
    this.#device = device;
    this.#frozen = frozen;
    this.#saver = saver;
    this.#release = release;
  }

  /** Saves the snapshot as checkpoint `name`, then releases it. */
  async save(name: string, options: SaveOptions = {}): Promise<SaveResult> {
    try {
      return await this.#saver(this.#device, this.#frozen, name, options);
    } finally {
      this.#release();
    }
  }

  /** Lets the device delete overlay generations only this snapshot needed (if not saved). */
  release(): void {
    this.#release();
  }
}

/** A copy-on-write block device; see the module doc. */
export class CowDevice implements BlockBackend {
  /** Device size in bytes. */
  readonly size: number;
  /** `true` when writes are refused. */
  readonly readOnly: boolean;
  /** One device for all connections: every completed write is visible to all. */
  readonly multiConn = true;
  /** Zeroing whole blocks only updates the block map. */
  readonly canFastZero = true;
  /** Block size in bytes. */
  readonly blockSize: number;
  /** The read-only layer below the overlay. */
  readonly lower: LowerLayer;
  /** Number of blocks. */
  readonly blockCount: number;
  /** Set by the store after each save. */
  lastSaved: SavedState | null = null;

  #where: Uint16Array;
  #layers: OverlayLayer[] = [];
  #active: OverlayLayer | null = null;
  #activeOpening: Promise<OverlayLayer> | null = null;
  #overlayDir: string;
  #prefix = crypto.randomUUID();
  #locks = new Map<number, Promise<void>>();
  #gate: Promise<void> | null = null;
  #writesInFlight = 0;
  #drained: (() => void) | null = null;
  #outstandingSnapshots = 0;
  #saver: SnapshotSaver;
  #onClose?: () => Promise<void>;
  #closed = false;

  /**
   * Creates a device over `lower`; use `Store.openDevice` rather than this.
   *
   * @param lower The read-only layer (the device owns it and closes it).
   * @param options Size, block size, overlay folder, saver.
   */
  constructor(lower: LowerLayer, options: CowDeviceOptions) {
    const { size, blockSize } = options;
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new StoreError(
        "invalid_argument",
        `Cannot open a device: size ${size} is not positive`,
      );
    }
    this.lower = lower;
    this.size = size;
    this.blockSize = blockSize;
    this.blockCount = Math.ceil(size / blockSize);
    this.readOnly = options.readOnly ?? false;
    this.#where = new Uint16Array(this.blockCount);
    // Blocks the lower layer does not cover start as zeros (no lower read needed).
    for (let i = Math.ceil(lower.size / blockSize); i < this.blockCount; i++) {
      this.#where[i] = WHERE_ZERO;
    }
    this.#overlayDir = options.overlayDir;
    this.#saver = options.saver;
    this.#onClose = options.onClose;
  }

  /** Number of blocks written (or zeroed) since the device opened; for tests and stats. */
  dirtyBlocks(): number {
    let n = 0;
    const lowerBlocks = Math.ceil(this.lower.size / this.blockSize);
    for (let i = 0; i < this.blockCount; i++) {
      const w = this.#where[i]!;
      if (w >= WHERE_LAYER0 || (w === WHERE_ZERO && i < lowerBlocks)) n++;
    }
    return n;
  }

  #checkOpen(action: string): void {
    if (this.#closed) throw new StoreError("closed", `Cannot ${action}: the device is closed`);
  }

  #checkRange(offset: number, length: number, action: string): void {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length < 0 || offset + length > this.size
    ) {
      throw new StoreError(
        "invalid_argument",
        `Cannot ${action} ${length} bytes at ${offset}: outside the ${this.size}-byte device`,
      );
    }
  }

  /** Reads `length` bytes at `offset`. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.#checkOpen("read");
    this.#checkRange(offset, length, "read");
    const out = new Uint8Array(length);
    await this.#readInto(offset, out, this.#where);
    return out;
  }

  /** Fills all of `target` with the bytes at `offset` (the server's zero-copy read path). */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.#checkOpen("read");
    this.#checkRange(offset, target.length, "read");
    await this.#readInto(offset, target, this.#where);
  }

  /**
   * Fills `dst` with device bytes at `offset` as described by block map `where`, coalescing
   * runs of blocks that live in the same file into one read.
   */
  async #readInto(offset: number, dst: Uint8Array, where: Uint16Array): Promise<void> {
    const bs = this.blockSize;
    const end = offset + dst.length;
    const jobs: Promise<unknown>[] = [];
    let pos = offset;
    while (pos < end) {
      const w = where[Math.floor(pos / bs)]!;
      // Extend the run while the next block lives in the same place.
      let runEnd = Math.min((Math.floor(pos / bs) + 1) * bs, end);
      while (runEnd < end && where[Math.floor(runEnd / bs)] === w) {
        runEnd = Math.min(runEnd + bs, end);
      }
      const part = dst.subarray(pos - offset, runEnd - offset);
      if (w === WHERE_LOWER) jobs.push(this.lower.read(pos, part));
      else if (w === WHERE_ZERO) part.fill(0);
      else {
        jobs.push(
          this.#layers[w - WHERE_LAYER0]!.file.read(part, pos).then((n) => {
            if (n < part.length) part.fill(0, n);
          }),
        );
      }
      pos = runEnd;
    }
    await Promise.all(jobs);
  }

  /** Fills all of `dst` from `layer` at `pos`, keeping the layer's file open meanwhile. */
  async #readLayer(layer: OverlayLayer, dst: Uint8Array, pos: number): Promise<void> {
    layer.readers++;
    try {
      const n = await layer.file.read(dst, pos);
      if (n < dst.length) dst.fill(0, n);
    } finally {
      layer.readers--;
      if (layer.retired && layer.readers === 0) this.#dropLayer(layer);
    }
  }

  #dropLayer(layer: OverlayLayer): void {
    layer.file.close();
    try {
      // Synchronous, so the file is gone when the save that retired it returns.
      Deno.removeSync(layer.path);
    } catch {
      // Already gone; nothing else to release.
    }
  }

  /**
   * Deletes frozen layers no block points at any more (all their blocks were rewritten in a
   * newer layer), so a long-running device that saves often does not keep every generation on
   * disk. Runs only when no snapshot is outstanding, since a snapshot's map may point at them.
   */
  #pruneLayers(): void {
    if (this.#outstandingSnapshots > 0 || this.#closed) return;
    const used = new Uint8Array(this.#layers.length);
    for (let i = 0; i < this.blockCount; i++) {
      const w = this.#where[i]!;
      if (w >= WHERE_LAYER0) used[w - WHERE_LAYER0] = 1;
    }
    for (const layer of this.#layers) {
      if (layer.retired || used[layer.index] || layer === this.#active) continue;
      if (this.#activeOpening !== null && layer.index === this.#layers.length - 1) continue;
      layer.retired = true;
      if (layer.readers === 0) this.#dropLayer(layer);
    }
  }

  /** Number of overlay files on disk (for tests and stats). */
  liveLayers(): number {
    return this.#layers.filter((l) => !l.retired).length;
  }

  async #acquire(first: number, last: number): Promise<() => void> {
    const waits: Promise<void>[] = [];
    const releases: (() => void)[] = [];
    // Queue on every block synchronously, so requests are ordered FIFO on each block and two
    // requests can never wait on each other in a cycle.
    for (let b = first; b <= last; b++) {
      const prev = this.#locks.get(b);
      let release!: () => void;
      const mine = new Promise<void>((r) => release = r);
      this.#locks.set(b, mine);
      if (prev) waits.push(prev);
      releases.push(() => {
        release();
        if (this.#locks.get(b) === mine) this.#locks.delete(b);
      });
    }
    await Promise.all(waits);
    return () => {
      for (const r of releases) r();
    };
  }

  async #activeLayer(): Promise<OverlayLayer> {
    if (this.#active) return this.#active;
    if (!this.#activeOpening) {
      this.#activeOpening = (async () => {
        if (this.#layers.length >= MAX_LAYERS) {
          throw new StoreError("invalid_argument", "Cannot write: too many overlay layers");
        }
        const index = this.#layers.length;
        const path = join(this.#overlayDir, `${this.#prefix}-${index}.overlay`);
        await Deno.mkdir(this.#overlayDir, { recursive: true });
        const file = await PositionalFile.open(path, "wx+");
        const layer: OverlayLayer = { index, path, file, readers: 0, retired: false };
        this.#layers.push(layer);
        this.#active = layer;
        this.#activeOpening = null;
        return layer;
      })();
    }
    return await this.#activeOpening;
  }

  /** Runs a mutation between the snapshot gate and the in-flight counter. */
  async #mutate(fn: () => Promise<void>): Promise<void> {
    this.#checkOpen("write");
    if (this.readOnly) {
      throw new StoreError("invalid_argument", "Cannot write: the device is read-only");
    }
    while (this.#gate) await this.#gate;
    this.#writesInFlight++;
    try {
      await fn();
    } finally {
      this.#writesInFlight--;
      if (this.#writesInFlight === 0 && this.#drained) this.#drained();
    }
  }

  /** Writes `data` at `offset`; partial blocks are merged with their current contents. */
  write(offset: number, data: Uint8Array, _options?: WriteOptions): Promise<void> {
    this.#checkRange(offset, data.length, "write");
    return this.#mutate(() => this.#writeRange(offset, data.length, data));
  }

  /** Makes `length` bytes at `offset` read as zeros. */
  writeZeroes(offset: number, length: number, _options?: WriteOptions): Promise<void> {
    this.#checkRange(offset, length, "write zeroes to");
    return this.#mutate(() => this.#writeRange(offset, length, null));
  }

  /** Discards whole blocks in the range (they read as zeros); partial blocks are kept. */
  trim(offset: number, length: number): Promise<void> {
    this.#checkRange(offset, length, "trim");
    const bs = this.blockSize;
    const first = Math.ceil(offset / bs);
    const endBlock = offset + length === this.size
      ? this.blockCount
      : Math.floor((offset + length) / bs);
    if (endBlock <= first) return Promise.resolve();
    return this.#mutate(async () => {
      const release = await this.#acquire(first, endBlock - 1);
      try {
        this.#where.fill(WHERE_ZERO, first, endBlock);
      } finally {
        release();
      }
    });
  }

  /** Writes `data` (or zeros when `null`) over `[offset, offset + length)`. */
  async #writeRange(offset: number, length: number, data: Uint8Array | null): Promise<void> {
    if (length === 0) return;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const release = await this.#acquire(first, last);
    try {
      const jobs: Promise<void>[] = [];
      let b = first;
      while (b <= last) {
        const blockStart = b * bs;
        const full = offset <= blockStart &&
          offset + length >= Math.min(blockStart + bs, this.size);
        if (!full) {
          jobs.push(this.#mergeBlock(b, offset, length, data));
          b++;
          continue;
        }
        // A run of whole blocks: zero blocks are only marked, data goes out in one write.
        let runEnd = b;
        while (
          runEnd + 1 <= last &&
          offset + length >= Math.min((runEnd + 2) * bs, this.size)
        ) runEnd++;
        if (data === null) {
          this.#where.fill(WHERE_ZERO, b, runEnd + 1);
        } else {
          jobs.push(this.#writeWholeBlocks(b, runEnd, data.subarray(blockStart - offset)));
        }
        b = runEnd + 1;
      }
      await Promise.all(jobs);
    } finally {
      release();
    }
  }

  async #writeWholeBlocks(first: number, last: number, src: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const layer = await this.#activeLayer();
    // Split the run at all-zero blocks so they are marked instead of stored.
    let runStart = -1;
    const pending: Promise<void>[] = [];
    const flush = (end: number) => {
      if (runStart < 0) return;
      const s = runStart;
      const bytes = src.subarray((s - first) * bs, Math.min((end - first) * bs, src.length));
      pending.push(
        layer.file.write(bytes, s * bs).then(() => {
          this.#where.fill(WHERE_LAYER0 + layer.index, s, end);
        }),
      );
      runStart = -1;
    };
    for (let b = first; b <= last; b++) {
      const block = src.subarray((b - first) * bs, Math.min((b - first + 1) * bs, src.length));
      if (isZero(block)) {
        flush(b);
        this.#where[b] = WHERE_ZERO;
      } else if (runStart < 0) {
        runStart = b;
      }
    }
    flush(last + 1);
    await Promise.all(pending);
  }

  /** Read-modify-write of one block partly covered by a write. */
  async #mergeBlock(
    b: number,
    offset: number,
    length: number,
    data: Uint8Array | null,
  ): Promise<void> {
    const bs = this.blockSize;
    const blockStart = b * bs;
    const blockLen = Math.min(bs, this.size - blockStart);
    const buf = new Uint8Array(bs);
    await this.#readInto(blockStart, buf.subarray(0, blockLen), this.#where);
    const from = Math.max(offset, blockStart);
    const to = Math.min(offset + length, blockStart + blockLen);
    if (data) buf.set(data.subarray(from - offset, to - offset), from - blockStart);
    else buf.fill(0, from - blockStart, to - blockStart);
    if (isZero(buf)) {
      this.#where[b] = WHERE_ZERO;
      return;
    }
    const layer = await this.#activeLayer();
    await layer.file.write(buf, blockStart);
    this.#where[b] = WHERE_LAYER0 + layer.index;
  }

  /**
   * Completed writes are visible to every connection at once. The overlay is this instance's
   * scratch space and its block map lives in memory, so it cannot outlive the process: making
   * its files durable would cost I/O for nothing. Durability comes from saving a checkpoint.
   */
  flush(): Promise<void> {
    this.#checkOpen("flush");
    return Promise.resolve();
  }

  /** Describes which runs of `[offset, offset + length)` read as zeros. */
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#checkOpen("query");
    this.#checkRange(offset, length, "query");
    const bs = this.blockSize;
    const extents: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const w = this.#where[b]!;
      const zero = w === WHERE_ZERO || (w === WHERE_LOWER && this.lower.isZeroBlock(b, bs));
      const next = Math.min((b + 1) * bs, end);
      const last = extents[extents.length - 1];
      if (last && last.zero === zero) last.length += next - pos;
      else extents.push({ length: next - pos, zero, hole: zero });
      pos = next;
    }
    return Promise.resolve(extents);
  }

  /**
   * Freezes the current contents: holds new writes, waits for writes in flight, copies the
   * block map and starts a new overlay layer. Writes resume at once; the snapshot can be saved
   * while they continue.
   */
  async snapshot(): Promise<DeviceSnapshot> {
    this.#checkOpen("snapshot");
    while (this.#gate) await this.#gate;
    let open!: () => void;
    this.#gate = new Promise<void>((r) => open = r);
    try {
      if (this.#writesInFlight > 0) {
        await new Promise<void>((r) => this.#drained = r);
        this.#drained = null;
      }
      const frozen: FrozenState = { where: this.#where.slice(), layers: [...this.#layers] };
      this.#active = null;
      this.#outstandingSnapshots++;
      let released = false;
      return new DeviceSnapshot(this, frozen, this.#saver, () => {
        if (released) return;
        released = true;
        this.#outstandingSnapshots--;
        this.#pruneLayers();
      });
    } finally {
      this.#gate = null;
      open();
    }
  }

  /** Snapshots the device and saves it as checkpoint `name`. */
  async save(name: string, options: SaveOptions = {}): Promise<SaveResult> {
    const snap = await this.snapshot();
    return await snap.save(name, options);
  }

  /** Reads block `index` of a frozen state into a fresh full-block buffer (for saves). */
  async readFrozenBlock(frozen: FrozenState, index: number): Promise<Uint8Array> {
    return await this.readFrozenRun(frozen, index, 1);
  }

  /**
   * Reads `count` consecutive blocks from `first` of a frozen state, which must all live in the
   * same place (one layer, or the lower layer), with one read. Bytes past the device end are
   * zero (they are not part of the disk, but a chunk is always a whole block).
   */
  async readFrozenRun(frozen: FrozenState, first: number, count: number): Promise<Uint8Array> {
    const bs = this.blockSize;
    const buf = new Uint8Array(count * bs);
    const w = frozen.where[first]!;
    const len = Math.min(count * bs, this.size - first * bs);
    if (w >= WHERE_LAYER0) {
      await this.#readLayer(frozen.layers[w - WHERE_LAYER0]!, buf.subarray(0, len), first * bs);
    } else if (w === WHERE_LOWER) await this.lower.read(first * bs, buf.subarray(0, len));
    return buf;
  }

  /** Closes the overlay files, deletes them, and closes the lower layer. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#activeOpening?.catch(() => {});
    for (const layer of this.#layers) {
      if (layer.retired) continue;
      layer.file.close();
      await Deno.remove(layer.path).catch(() => {});
    }
    this.lower.close();
    await this.#onClose?.();
  }
}
