/**
 * The checkpoint store: chunks, manifests, base-image hash caches, leases and the store lock.
 * This is its face; the parts are the folder (store_dir.ts), gc and leases (gc.ts), the
 * base-image cache (base_cache.ts) and the save pipeline (save.ts).
 *
 * ```
 * <store>/
 *   lock                    flock: saves and device opens hold it shared, gc exclusive
 *   chunks/ab/cdef...       one file per distinct non-zero block, named by BLAKE3-256
 *   checkpoints/NAME.idx    one full block table per checkpoint (see manifest.ts)
 *   bases/ID.idx            block table of a base image, ID = hash of its content's table
 *   bases/file-DEV-INO-BS.json  which ID a base file has, valid while (size, mtime) match
 *   bases/remote-DIGEST.idx  `.idx` of a registry checkpoint read lazily or being pulled (a root)
 *   leases/PID.START.UUID.idx  hard links to manifests an open device still needs (gc roots)
 *   tmp/                    chunks and manifests being written; renamed into place when complete
 * ```
 *
 * @module
 */

import { baseTable } from "./base_cache.ts";
import type { ChunkSource } from "./chunk_source.ts";
import { ChunkStore, fsyncDir } from "./chunk_store.ts";
import { BaseLower, CheckpointLower, CowDevice, type LowerLayer } from "./device.ts";
import { StoreError } from "./errors.ts";
import { collectGarbage, type GcOptions, type GcReport, hashSet, takeLease } from "./gc.ts";
import { initHasher, toHex } from "./hash.ts";
import { BlockTable, decodeManifest, type ImageMeta } from "./manifest.ts";
import { type OpenedDevice, saveSnapshot } from "./save.ts";
import { StoreDir, validateName } from "./store_dir.ts";

export { validateName } from "./store_dir.ts";
export type { GcOptions, GcReport } from "./gc.ts";

/** Default block size: see `docs/store.md` for the measurements behind it. */
export const DEFAULT_BLOCK_SIZE = 64 * 1024;

/** Options of {@linkcode Store.open}. */
export interface StoreOpenOptions {
  /** Block size for devices opened from a base image (default {@linkcode DEFAULT_BLOCK_SIZE}). */
  blockSize?: number;
  /** Where corrupt-chunk lines go (default `console.error`). */
  log?: (line: string) => void;
}

/** Where a device starts from. */
export type DeviceSource =
  | { base: string }
  | { checkpoint: string }
  | { remote: RemoteDeviceSource };

/** A checkpoint from a registry, read lazily (see `remote_source.ts`). */
export interface RemoteDeviceSource {
  /** The reference, for logs. */
  name: string;
  /** Its `.idx` manifest, pinned in the store with {@linkcode Store.pinRemoteManifest}. */
  manifestPath: string;
  /** Where its chunks come from (local store first, then the registry). */
  chunks: ChunkSource;
}

/** Options of {@linkcode Store.openDevice}. */
export interface OpenDeviceOptions {
  /** Device size in bytes (default: the base's or checkpoint's size). May exceed it. */
  size?: number;
  /** The instance folder where overlay files go. */
  overlayDir: string;
  /** Refuse writes. */
  readOnly?: boolean;
  /**
   * The guest architecture using the device, recorded in every checkpoint saved from it
   * (default: the checkpoint's it was opened from, if it recorded one).
   */
  arch?: string;
}

/** One checkpoint as listed. */
export interface CheckpointInfo {
  /** The checkpoint's name (its manifest is `checkpoints/NAME.idx`). */
  name: string;
  /** Disk size in bytes. */
  diskSize: number;
  /** Block size in bytes. */
  blockSize: number;
  /** Non-zero blocks. */
  usedBlocks: number;
  /** Manifest file size in bytes. */
  manifestBytes: number;
  /** Creation time (ms since the epoch), if recorded. */
  createdAt?: number;
  /** The checkpoint it was saved from, if any (informational). */
  parent?: string;
  /** The registry reference and manifest digest it was pulled from, if it was. */
  origin?: { ref: string; digest: string };
  /** The OCI image it descends from, with that image's sandbox settings. */
  image?: ImageMeta;
  /** The guest architecture it was saved from, if recorded (see `ManifestMeta.arch`). */
  arch?: string;
  /** Set when the manifest fails validation. */
  error?: string;
}

/** Details of one checkpoint. */
export interface CheckpointDetails extends CheckpointInfo {
  /** Bytes of data the checkpoint references (used blocks x block size). */
  usedBytes: number;
  /** Distinct chunks it references. */
  distinctChunks: number;
  /** Chunks only this checkpoint references. */
  uniqueChunks: number;
  /** Bytes that deleting it and running gc would free. */
  uniqueBytes: number;
}

/** A content-addressed block store; see the module doc. */
export class Store {
  /** The store folder. */
  readonly dir: string;
  /** Block size for devices opened from a base image. */
  readonly blockSize: number;
  /** The chunk files. */
  readonly chunks: ChunkStore;
  readonly #dir: StoreDir;
  #log: (line: string) => void;

  private constructor(dir: string, options: StoreOpenOptions) {
    this.dir = dir;
    this.#dir = new StoreDir(dir);
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.chunks = new ChunkStore(dir);
    this.#log = options.log ?? ((line) => console.error(line));
  }

  /** Opens (creating if needed) the store in `dir`. */
  static async open(dir: string, options: StoreOpenOptions = {}): Promise<Store> {
    await initHasher();
    const store = new Store(dir, options);
    await store.#dir.create();
    await store.chunks.init();
    // Validates the block size early.
    new BlockTable(store.blockSize, 0);
    return store;
  }

  /** `true` when checkpoint `name` exists. */
  async has(name: string): Promise<boolean> {
    validateName(name);
    try {
      await Deno.lstat(this.#dir.checkpointPath(name));
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  /** Lists checkpoints (sorted by name); a broken manifest is listed with `error`. */
  async list(): Promise<CheckpointInfo[]> {
    const out: CheckpointInfo[] = [];
    for (const name of await this.#dir.names()) {
      const path = this.#dir.checkpointPath(name);
      try {
        const bytes = await Deno.readFile(path);
        const m = decodeManifest(bytes);
        const info: CheckpointInfo = {
          name,
          diskSize: m.header.diskSize,
          blockSize: m.header.blockSize,
          usedBlocks: m.header.usedCount,
          manifestBytes: bytes.length,
        };
        if (m.meta.createdAt !== undefined) info.createdAt = m.meta.createdAt;
        if (m.meta.parent !== undefined) info.parent = m.meta.parent;
        if (m.meta.origin !== undefined) info.origin = m.meta.origin;
        if (m.meta.image !== undefined) info.image = m.meta.image;
        if (m.meta.arch !== undefined) info.arch = m.meta.arch;
        out.push(info);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue;
        out.push({
          name,
          diskSize: 0,
          blockSize: 0,
          usedBlocks: 0,
          manifestBytes: 0,
          error: (err as Error).message,
        });
      }
    }
    return out;
  }

  /** Describes checkpoint `name`, including the bytes only it references. */
  async inspect(name: string): Promise<CheckpointDetails> {
    validateName(name);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(this.#dir.checkpointPath(name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw await this.#dir.notFound(name, "inspect");
      throw err;
    }
    const m = decodeManifest(bytes);
    const mine = hashSet(m.table);
    const others = new Set<string>();
    for (const other of await this.#dir.names()) {
      if (other === name) continue;
      try {
        for (
          const h of hashSet((await this.#dir.readManifest(this.#dir.checkpointPath(other))).table)
        ) {
          if (mine.has(h)) others.add(h);
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    for (const path of await this.#dir.rootFiles(["bases", "leases"])) {
      for (const h of hashSet((await this.#dir.readManifest(path)).table)) {
        if (mine.has(h)) others.add(h);
      }
    }
    const uniqueChunks = mine.size - others.size;
    const details: CheckpointDetails = {
      name,
      diskSize: m.header.diskSize,
      blockSize: m.header.blockSize,
      usedBlocks: m.header.usedCount,
      manifestBytes: bytes.length,
      usedBytes: m.header.usedCount * m.header.blockSize,
      distinctChunks: mine.size,
      uniqueChunks,
      uniqueBytes: uniqueChunks * m.header.blockSize,
    };
    if (m.meta.createdAt !== undefined) details.createdAt = m.meta.createdAt;
    if (m.meta.parent !== undefined) details.parent = m.meta.parent;
    if (m.meta.origin !== undefined) details.origin = m.meta.origin;
    if (m.meta.image !== undefined) details.image = m.meta.image;
    if (m.meta.arch !== undefined) details.arch = m.meta.arch;
    return details;
  }

  /** The `.idx` manifest file of checkpoint `name`, validated. */
  async readManifestBytes(name: string): Promise<Uint8Array> {
    validateName(name);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(this.#dir.checkpointPath(name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw await this.#dir.notFound(name, "read");
      throw err;
    }
    decodeManifest(bytes);
    return bytes;
  }

  /** Deletes checkpoint `name` (its chunks go at the next gc unless still referenced). */
  async delete(name: string): Promise<void> {
    validateName(name);
    try {
      await Deno.remove(this.#dir.checkpointPath(name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw await this.#dir.notFound(name, "delete");
      throw err;
    }
    await fsyncDir(this.#dir.join("checkpoints"));
  }

  /**
   * Removes chunks no manifest references. Runs under the exclusive store lock, so no save
   * (which holds the lock shared from its first chunk to its manifest rename) and no device
   * open (which links its manifest into `leases/` under the shared lock) runs meanwhile.
   * Chunks an open device still needs are kept through its lease.
   */
  gc(options: GcOptions = {}): Promise<GcReport> {
    return collectGarbage(this.#dir, this.chunks, options);
  }

  /**
   * Opens a copy-on-write device over a base image file or a checkpoint. Opening reads only
   * the checkpoint's manifest; a base image is not read until the guest reads it.
   */
  async openDevice(source: DeviceSource, options: OpenDeviceOptions): Promise<CowDevice> {
    let lower: LowerLayer;
    let opened: OpenedDevice;
    let blockSize = this.blockSize;
    const leases: OpenedDevice["leases"] = {};
    let arch = options.arch;
    if ("base" in source) {
      try {
        const base = await BaseLower.open(source.base);
        lower = base;
        opened = { lower: { kind: "base", base }, leases };
      } catch (err) {
        throw new StoreError(
          "not_found",
          `Cannot open base image ${source.base}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    } else {
      const [name, path, chunks] = "checkpoint" in source
        ? [source.checkpoint, this.#dir.checkpointPath(source.checkpoint), this.chunks]
        : [source.remote.name, source.remote.manifestPath, source.remote.chunks];
      if ("checkpoint" in source) validateName(source.checkpoint);
      const leasePath = await takeLease(this.#dir, path).catch(async (err) => {
        if (err instanceof Deno.errors.NotFound && "checkpoint" in source) {
          throw await this.#dir.notFound(source.checkpoint, "open");
        }
        throw err;
      });
      leases.lower = leasePath;
      try {
        const m = await this.#dir.readManifest(leasePath);
        blockSize = m.header.blockSize;
        arch ??= m.meta.arch;
        const checkpoint = new CheckpointLower(name, m.table, chunks, { log: this.#log });
        lower = checkpoint;
        opened = { lower: { kind: "checkpoint", checkpoint }, leases };
      } catch (err) {
        await Deno.remove(leasePath).catch(() => {});
        throw err;
      }
    }
    if (arch !== undefined) opened.arch = arch;
    const size = options.size ?? lower.size;
    let device: CowDevice;
    try {
      if (!Number.isSafeInteger(size) || size <= 0) {
        throw new StoreError(
          "invalid_argument",
          `Cannot open a device of ${size} bytes: the size must be a positive integer`,
        );
      }
      device = new CowDevice(lower, {
        size,
        blockSize,
        overlayDir: options.overlayDir,
        readOnly: options.readOnly ?? false,
        saver: (dev, frozen, name, opts) =>
          saveSnapshot({ dir: this.#dir, chunks: this.chunks }, { device: dev, frozen, opened }, {
            ...opts,
            name,
          }),
        onClose: async () => {
          for (const p of [leases.lower, leases.saved]) {
            if (p) await Deno.remove(p).catch(() => {});
          }
        },
      });
    } catch (err) {
      lower.close();
      if (leases.lower) await Deno.remove(leases.lower).catch(() => {});
      throw err;
    }
    return device;
  }

  /**
   * Ingests a base image now (hashes its non-zero blocks, stores them as chunks, caches its
   * table), so the first save of a device over it later costs only the dirty blocks. Call it
   * after building a base image; a no-op when the cache already matches the file.
   * Returns the number of blocks hashed.
   */
  async prepareBase(path: string): Promise<number> {
    let lower: BaseLower;
    try {
      lower = await BaseLower.open(path);
    } catch (err) {
      throw new StoreError(
        "not_found",
        `Cannot open base image ${path}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const lock = await this.#dir.lock(false);
    try {
      const base = await baseTable(this.#dir, this.chunks, lower, { blockSize: this.blockSize });
      return base.hashed;
    } finally {
      lock.close();
      lower.close();
    }
  }

  /**
   * Keeps the `.idx` manifest of a registry checkpoint as `bases/remote-ID.idx` (a gc root,
   * dropped like base caches by `gc --prune-base-cache`), written under the shared lock so a
   * gc never runs between it and the chunks fetched for it. Returns its path.
   */
  async pinRemoteManifest(id: string, bytes: Uint8Array): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(id)) {
      throw new StoreError("invalid_argument", `Cannot pin remote manifest "${id}": bad id`);
    }
    decodeManifest(bytes);
    const path = this.#dir.join("bases", `remote-${id}.idx`);
    const lock = await this.#dir.lock(false);
    try {
      await this.#dir.writeAtomic(path, bytes, true);
    } finally {
      lock.close();
    }
    return path;
  }

  /**
   * Publishes manifest `bytes` as checkpoint `name` (atomically, durably; refuses an existing
   * name unless `overwrite`). Every chunk it references must be in the store: callers fetch
   * them first while a pin ({@linkcode Store.pinRemoteManifest}) keeps them from gc.
   */
  async publishCheckpoint(
    name: string,
    bytes: Uint8Array,
    options: { overwrite?: boolean } = {},
  ): Promise<void> {
    validateName(name);
    const m = decodeManifest(bytes);
    const lock = await this.#dir.lock(false);
    try {
      if (!options.overwrite && await this.has(name)) {
        throw new StoreError(
          "exists",
          `Cannot save checkpoint "${name}": it already exists (delete it or ask to overwrite)`,
        );
      }
      for (let i = 0; i < m.table.entryCount; i++) {
        const h = m.table.get(i);
        if (h && !(await this.chunks.has(h))) {
          throw new StoreError(
            "corrupt_chunk",
            `Cannot save checkpoint "${name}": chunk ${toHex(h)} (block ${i}) is not in the store`,
          );
        }
      }
      try {
        await this.#dir.writeAtomic(
          this.#dir.checkpointPath(name),
          bytes,
          options.overwrite ?? false,
        );
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) {
          throw new StoreError("exists", `Cannot save checkpoint "${name}": it already exists`);
        }
        throw err;
      }
    } finally {
      lock.close();
    }
  }
}
