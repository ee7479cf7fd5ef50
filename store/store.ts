/**
 * The checkpoint store: chunks, manifests, base-image hash caches, leases and the store lock.
 *
 * ```
 * <store>/
 *   lock                    flock: saves and device opens hold it shared, gc exclusive
 *   chunks/ab/cdef...       one file per distinct non-zero block, named by BLAKE3-256
 *   checkpoints/NAME.idx    one full block table per checkpoint (see manifest.ts)
 *   bases/ID.idx            block table of a base image, ID = hash of its content's table
 *   bases/file-DEV-INO-BS.json  which ID a base file has, valid while (size, mtime, ctime) match
 *   leases/PID.UUID.idx     hard links to manifests an open device still needs (gc roots)
 *   tmp/                    chunks and manifests being written; renamed into place when complete
 * ```
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { BlockTable, decodeManifest, encodeManifest, type ManifestMeta } from "./manifest.ts";
import { ChunkBatch, ChunkStore, forEachLimit, fsyncDir } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { blake3, HASH_LEN, initHasher, isZero, toHex } from "./hash.ts";
import {
  BaseLower,
  CheckpointLower,
  CowDevice,
  type FrozenState,
  type LowerLayer,
  type SaveOptions,
  type SaveResult,
  WHERE_LOWER,
  WHERE_ZERO,
} from "./device.ts";

/** Default block size: see `docs/store.md` for the measurements behind it. */
export const DEFAULT_BLOCK_SIZE = 64 * 1024;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Throws `invalid_name` unless `name` is a safe checkpoint name. */
export function validateName(name: string): void {
  if (!NAME_RE.test(name) || name.includes("..")) {
    throw new StoreError(
      "invalid_name",
      `Cannot use checkpoint name "${name}": use 1-128 letters, digits, '.', '_' or '-', ` +
        "starting with a letter or digit",
    );
  }
}

/** Options of {@linkcode Store.open}. */
export interface StoreOpenOptions {
  /** Block size for devices opened from a base image (default {@linkcode DEFAULT_BLOCK_SIZE}). */
  blockSize?: number;
  /** Where corrupt-chunk lines go (default `console.error`). */
  log?: (line: string) => void;
}

/** Where a device starts from. */
export type DeviceSource = { base: string } | { checkpoint: string };

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
  /** Name. */
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

/** What gc did. */
export interface GcReport {
  /** Chunks removed. */
  removedChunks: number;
  /** Bytes freed by removing chunks. */
  freedBytes: number;
  /** Chunks kept. */
  keptChunks: number;
  /** Bytes kept. */
  keptBytes: number;
  /** Leftover temporary files removed. */
  removedTempFiles: number;
  /** Leases of dead processes removed. */
  removedLeases: number;
  /** Base-image caches removed (with `pruneBaseCache`). */
  removedBaseCaches: number;
}

/** Options of {@linkcode Store.gc}. */
export interface GcOptions {
  /** Also drop the base-image hash caches (the next save from a base re-reads it). */
  pruneBaseCache?: boolean;
}

interface BaseKey {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  contentId: string;
}

/** A content-addressed block store; see the module doc. */
export class Store {
  /** The store folder. */
  readonly dir: string;
  /** Block size for devices opened from a base image. */
  readonly blockSize: number;
  /** The chunk files. */
  readonly chunks: ChunkStore;
  #log: (line: string) => void;
  #leases = new WeakMap<CowDevice, { lower?: string; saved?: string }>();

  private constructor(dir: string, options: StoreOpenOptions) {
    this.dir = dir;
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.chunks = new ChunkStore(dir);
    this.#log = options.log ?? ((line) => console.error(line));
  }

  /** Opens (creating if needed) the store in `dir`. */
  static async open(dir: string, options: StoreOpenOptions = {}): Promise<Store> {
    await initHasher();
    for (const sub of ["chunks", "checkpoints", "bases", "leases", "tmp"]) {
      await Deno.mkdir(join(dir, sub), { recursive: true });
    }
    const store = new Store(dir, options);
    await store.chunks.init();
    // Validates the block size early.
    new BlockTable(store.blockSize, 0);
    return store;
  }

  #checkpointPath(name: string): string {
    return join(this.dir, "checkpoints", `${name}.idx`);
  }

  /** Takes the store lock: shared for saves and opens, exclusive for gc. */
  async #lock(exclusive: boolean): Promise<Deno.FsFile> {
    const file = await Deno.open(join(this.dir, "lock"), {
      read: true,
      write: true,
      create: true,
    });
    try {
      await file.lock(exclusive);
    } catch (err) {
      file.close();
      throw err;
    }
    return file;
  }

  async #names(): Promise<string[]> {
    const names: string[] = [];
    for await (const e of Deno.readDir(join(this.dir, "checkpoints"))) {
      if (e.isFile && e.name.endsWith(".idx")) {
        const name = e.name.slice(0, -4);
        if (NAME_RE.test(name)) names.push(name);
      }
    }
    return names.sort();
  }

  async #notFound(name: string, action: string): Promise<StoreError> {
    const names = await this.#names();
    return new StoreError(
      "not_found",
      `Cannot ${action} checkpoint "${name}": no such checkpoint (existing: ${
        names.length ? names.join(", ") : "none"
      })`,
    );
  }

  /** `true` when checkpoint `name` exists. */
  async has(name: string): Promise<boolean> {
    validateName(name);
    try {
      await Deno.lstat(this.#checkpointPath(name));
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  async #readManifest(path: string) {
    return decodeManifest(await Deno.readFile(path));
  }

  /** Lists checkpoints (sorted by name); a broken manifest is listed with `error`. */
  async list(): Promise<CheckpointInfo[]> {
    const out: CheckpointInfo[] = [];
    for (const name of await this.#names()) {
      const path = this.#checkpointPath(name);
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
      bytes = await Deno.readFile(this.#checkpointPath(name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw await this.#notFound(name, "inspect");
      throw err;
    }
    const m = decodeManifest(bytes);
    const mine = hashSet(m.table);
    const others = new Set<string>();
    for (const other of await this.#names()) {
      if (other === name) continue;
      try {
        for (const h of hashSet((await this.#readManifest(this.#checkpointPath(other))).table)) {
          if (mine.has(h)) others.add(h);
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    for (const path of await this.#rootFiles(["bases", "leases"])) {
      for (const h of hashSet((await this.#readManifest(path)).table)) {
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
    if (m.meta.arch !== undefined) details.arch = m.meta.arch;
    return details;
  }

  /** Deletes checkpoint `name` (its chunks go at the next gc unless still referenced). */
  async delete(name: string): Promise<void> {
    validateName(name);
    try {
      await Deno.remove(this.#checkpointPath(name));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw await this.#notFound(name, "delete");
      throw err;
    }
    await fsyncDir(join(this.dir, "checkpoints"));
  }

  async #rootFiles(subs: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const sub of subs) {
      for await (const e of Deno.readDir(join(this.dir, sub))) {
        if (e.isFile && e.name.endsWith(".idx")) out.push(join(this.dir, sub, e.name));
      }
    }
    return out;
  }

  /**
   * Removes chunks no manifest references. Runs under the exclusive store lock, so no save
   * (which holds the lock shared from its first chunk to its manifest rename) and no device
   * open (which links its manifest into `leases/` under the shared lock) runs meanwhile.
   * Chunks an open device still needs are kept through its lease.
   */
  async gc(options: GcOptions = {}): Promise<GcReport> {
    const lock = await this.#lock(true);
    try {
      const report: GcReport = {
        removedChunks: 0,
        freedBytes: 0,
        keptChunks: 0,
        keptBytes: 0,
        removedTempFiles: 0,
        removedLeases: 0,
        removedBaseCaches: 0,
      };
      // No save holds the lock, so everything in tmp/ is left over from a crash.
      for await (const e of Deno.readDir(join(this.dir, "tmp"))) {
        await Deno.remove(join(this.dir, "tmp", e.name), { recursive: true }).catch(() => {});
        report.removedTempFiles++;
      }
      for await (const e of Deno.readDir(join(this.dir, "leases"))) {
        const pid = Number(e.name.split(".")[0]);
        if (Number.isInteger(pid) && pid > 0 && await processAlive(pid)) continue;
        await Deno.remove(join(this.dir, "leases", e.name)).catch(() => {});
        report.removedLeases++;
      }
      if (options.pruneBaseCache) {
        for await (const e of Deno.readDir(join(this.dir, "bases"))) {
          await Deno.remove(join(this.dir, "bases", e.name)).catch(() => {});
          if (e.name.endsWith(".idx")) report.removedBaseCaches++;
        }
      }
      const live = new Set<string>();
      const roots = [
        ...(await this.#names()).map((n) => this.#checkpointPath(n)),
        ...await this.#rootFiles(["bases", "leases"]),
      ];
      for (const path of roots) {
        let table: BlockTable;
        try {
          table = (await this.#readManifest(path)).table;
        } catch (err) {
          throw new StoreError(
            "bad_manifest",
            `Cannot collect garbage: manifest ${path} is unreadable, so its chunks are unknown ` +
              `(${(err as Error).message}); delete or restore it first`,
            { cause: err },
          );
        }
        for (const h of hashSet(table)) live.add(h);
      }
      for await (const [hex, size] of this.chunks.list()) {
        if (live.has(hex)) {
          report.keptChunks++;
          report.keptBytes += size;
        } else {
          await this.chunks.removeHex(hex);
          report.removedChunks++;
          report.freedBytes += size;
        }
      }
      return report;
    } finally {
      lock.close();
    }
  }

  /**
   * Opens a copy-on-write device over a base image file or a checkpoint. Opening reads only
   * the checkpoint's manifest; a base image is not read until the guest reads it.
   */
  async openDevice(source: DeviceSource, options: OpenDeviceOptions): Promise<CowDevice> {
    let lower: LowerLayer;
    let blockSize = this.blockSize;
    let arch = options.arch;
    const lease: { lower?: string; saved?: string } = {};
    if ("base" in source) {
      try {
        lower = await BaseLower.open(source.base);
      } catch (err) {
        throw new StoreError(
          "not_found",
          `Cannot open base image ${source.base}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    } else {
      validateName(source.checkpoint);
      const leasePath = await this.#takeLease(this.#checkpointPath(source.checkpoint)).catch(
        async (err) => {
          if (err instanceof Deno.errors.NotFound) {
            throw await this.#notFound(source.checkpoint, "open");
          }
          throw err;
        },
      );
      lease.lower = leasePath;
      try {
        const m = await this.#readManifest(leasePath);
        blockSize = m.header.blockSize;
        arch ??= m.meta.arch;
        lower = new CheckpointLower(source.checkpoint, m.table, this.chunks, { log: this.#log });
      } catch (err) {
        await Deno.remove(leasePath).catch(() => {});
        throw err;
      }
    }
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
        saver: (dev, frozen, name, opts) => this.#save(dev, frozen, name, opts, arch),
        onClose: async () => {
          const l = this.#leases.get(device);
          for (const p of [l?.lower, l?.saved]) if (p) await Deno.remove(p).catch(() => {});
        },
      });
    } catch (err) {
      lower.close();
      if (lease.lower) await Deno.remove(lease.lower).catch(() => {});
      throw err;
    }
    this.#leases.set(device, lease);
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
    const lock = await this.#lock(false);
    try {
      const [, , hashed] = await this.#baseTable(lower, this.blockSize);
      return hashed;
    } finally {
      lock.close();
      lower.close();
    }
  }

  /** Hard-links `manifest` into `leases/` under the shared lock; returns the lease path. */
  async #takeLease(manifest: string): Promise<string> {
    const lock = await this.#lock(false);
    try {
      const path = join(this.dir, "leases", `${Deno.pid}.${crypto.randomUUID()}.idx`);
      await Deno.link(manifest, path);
      return path;
    } finally {
      lock.close();
    }
  }

  /** The block table of a base image: from the cache when its identity matches, else ingested. */
  async #baseTable(
    lower: BaseLower,
    blockSize: number,
    phases?: { hashMs: number; writeMs: number; syncMs: number },
  ): Promise<[BlockTable, string, number, number]> {
    const now = await Deno.stat(lower.name);
    const opened = lower.stat;
    if (
      now.dev !== opened.dev || now.ino !== opened.ino || now.size !== opened.size ||
      now.mtime?.getTime() !== opened.mtime?.getTime() ||
      now.ctime?.getTime() !== opened.ctime?.getTime()
    ) {
      throw new StoreError(
        "invalid_argument",
        `Cannot save: base image ${lower.name} changed while the device was open`,
      );
    }
    const keyPath = join(this.dir, "bases", `file-${opened.dev}-${opened.ino}-${blockSize}.json`);
    const key: Omit<BaseKey, "contentId"> = {
      size: opened.size,
      mtimeMs: opened.mtime?.getTime() ?? 0,
      ctimeMs: opened.ctime?.getTime() ?? 0,
    };
    try {
      const cached = JSON.parse(await Deno.readTextFile(keyPath)) as BaseKey;
      if (
        cached.size === key.size && cached.mtimeMs === key.mtimeMs &&
        cached.ctimeMs === key.ctimeMs && /^[0-9a-f]{64}$/.test(cached.contentId)
      ) {
        const m = await this.#readManifest(join(this.dir, "bases", `${cached.contentId}.idx`));
        if (m.table.blockSize === blockSize && m.table.diskSize === lower.size) {
          return [m.table, cached.contentId, 0, 0];
        }
      }
    } catch {
      // No usable cache entry: ingest below.
    }
    const table = new BlockTable(blockSize, lower.size);
    const slab = Math.max(1, Math.floor(4 * 1024 * 1024 / blockSize));
    let hashed = 0;
    const batch = new ChunkBatch(this.chunks);
    try {
      for (let first = 0; first < table.entryCount; first += slab) {
        const count = Math.min(slab, table.entryCount - first);
        const buf = new Uint8Array(count * blockSize);
        await lower.read(first * blockSize, buf);
        for (let k = 0; k < count; k++) {
          const block = buf.subarray(k * blockSize, (k + 1) * blockSize);
          if (isZero(block)) continue;
          const th = performance.now();
          const h = blake3(block);
          if (phases) phases.hashMs += performance.now() - th;
          hashed++;
          table.set(first + k, h);
          await batch.add(h, block);
        }
      }
      await batch.finish();
    } catch (err) {
      batch.abort();
      throw err;
    }
    const written = batch.written;
    if (phases) {
      phases.writeMs += batch.writeMs;
      phases.syncMs += batch.syncMs;
    }
    const geometry = new TextEncoder().encode(`${blockSize}:${lower.size}:`);
    const contentId = toHex(blake3(geometry, table.hashes));
    await this.#writeAtomic(
      join(this.dir, "bases", `${contentId}.idx`),
      encodeManifest(table, { createdAt: Date.now() }),
      true,
    );
    await this.#writeAtomic(
      keyPath,
      new TextEncoder().encode(JSON.stringify({ ...key, contentId })),
      true,
    );
    return [table, contentId, hashed, written];
  }

  /** Writes `bytes` to `path` atomically and durably; refuses to replace unless `overwrite`. */
  async #writeAtomic(path: string, bytes: Uint8Array, overwrite: boolean): Promise<void> {
    const tmp = join(this.dir, "tmp", `${basename(path)}.${crypto.randomUUID()}.tmp`);
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true });
      try {
        let off = 0;
        while (off < bytes.length) off += await file.write(bytes.subarray(off));
        await file.sync();
      } finally {
        file.close();
      }
      if (overwrite) {
        await Deno.rename(tmp, path);
      } else {
        // link() fails if the name exists, so two saves racing for one name cannot both win.
        await Deno.link(tmp, path);
      }
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
    await fsyncDir(dirname(path));
  }

  async #save(
    device: CowDevice,
    frozen: FrozenState,
    name: string,
    options: SaveOptions,
    arch: string | undefined,
  ): Promise<SaveResult> {
    validateName(name);
    const t0 = performance.now();
    const lock = await this.#lock(false);
    try {
      if (!options.overwrite && await this.has(name)) {
        throw new StoreError(
          "exists",
          `Cannot save checkpoint "${name}": it already exists (delete it or ask to overwrite)`,
        );
      }
      const bs = device.blockSize;
      const prev = device.lastSaved;
      // Start from the previous save's table (one memcpy): only entries whose block-map value
      // changed since then are looked at again.
      const table = new BlockTable(bs, device.size, prev ? prev.table.hashes.slice() : undefined);
      const where = frozen.where;
      const lower = device.lower;
      const lowerBlocks = Math.ceil(lower.size / bs);
      // The device's last block holds lower bytes beyond the device end when the device is
      // smaller than the lower layer: its lower hash would not match, so hash it afresh.
      const clipped = device.size < lower.size ? device.blockCount - 1 : -1;
      const toHash: number[] = [];
      const fromLower: number[] = [];
      const prevWhere = prev?.where;
      for (let i = 0; i < device.blockCount; i++) {
        const w = where[i]!;
        if (prevWhere !== undefined && prevWhere[i] === w) continue;
        if (prevWhere !== undefined) table.set(i, null);
        if (w === WHERE_ZERO) continue;
        if (w === WHERE_LOWER) {
          if (i === clipped) toHash.push(i);
          else if (i < lowerBlocks) fromLower.push(i);
        } else {
          toHash.push(i);
        }
      }
      let hashedBlocks = 0;
      let newChunks = 0;
      const phases = { hashMs: 0, writeMs: 0, syncMs: 0, manifestMs: 0 };
      let baseId: string | undefined;
      if (fromLower.length > 0) {
        let lowerTable: BlockTable;
        if (lower instanceof CheckpointLower) {
          lowerTable = lower.table;
        } else if (lower instanceof BaseLower) {
          const [t, id, hashed, written] = await this.#baseTable(lower, bs, phases);
          lowerTable = t;
          baseId = id;
          hashedBlocks += hashed;
          newChunks += written;
        } else {
          throw new StoreError("invalid_argument", "Cannot save: unknown lower layer");
        }
        for (const i of fromLower) table.copyEntry(lowerTable, i);
      }
      const batch = new ChunkBatch(this.chunks);
      try {
        // Runs of consecutive blocks in the same place are read with one read (up to 4 MiB):
        // one read per block made saves wait on the I/O thread pool under load (measured).
        const runs: [number, number][] = [];
        const maxRun = Math.max(1, Math.floor(4 * 1024 * 1024 / bs));
        for (const i of toHash) {
          const last = runs[runs.length - 1];
          if (
            last && last[0] + last[1] === i && last[1] < maxRun && where[i] === where[last[0]]
          ) {
            last[1]++;
          } else {
            runs.push([i, 1]);
          }
        }
        await forEachLimit(runs, 4, async ([first, count]) => {
          const data = await device.readFrozenRun(frozen, first, count);
          for (let k = 0; k < count; k++) {
            const buf = data.subarray(k * bs, (k + 1) * bs);
            if (isZero(buf)) continue;
            const th = performance.now();
            const h = blake3(buf);
            phases.hashMs += performance.now() - th;
            hashedBlocks++;
            table.set(first + k, h);
            await batch.add(h, buf);
          }
        });
        await batch.finish();
      } catch (err) {
        batch.abort();
        throw err;
      }
      newChunks += batch.written;
      phases.writeMs += batch.writeMs;
      phases.syncMs += batch.syncMs;
      const tm = performance.now();
      const meta: ManifestMeta = { createdAt: Date.now() };
      const parent = prev?.name ?? (lower.kind === "checkpoint" ? lower.name : undefined);
      if (parent !== undefined) meta.parent = parent;
      if (baseId !== undefined) meta.base = baseId;
      if (arch !== undefined) meta.arch = arch;
      const bytes = encodeManifest(table, meta);
      const path = this.#checkpointPath(name);
      try {
        await this.#writeAtomic(path, bytes, options.overwrite ?? false);
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) {
          throw new StoreError("exists", `Cannot save checkpoint "${name}": it already exists`);
        }
        throw err;
      }
      phases.manifestMs = performance.now() - tm;
      // Keep what the next save will copy hashes from alive, even if this checkpoint is deleted.
      const lease = this.#leases.get(device) ?? {};
      const newLease = join(this.dir, "leases", `${Deno.pid}.${crypto.randomUUID()}.idx`);
      await Deno.link(path, newLease);
      if (lease.saved) await Deno.remove(lease.saved).catch(() => {});
      lease.saved = newLease;
      this.#leases.set(device, lease);
      device.lastSaved = { where, table, name };
      return {
        name,
        hashedBlocks,
        newChunks,
        newBytes: newChunks * bs,
        usedBlocks: table.usedCount(),
        manifestBytes: bytes.length,
        elapsedMs: performance.now() - t0,
        phases,
      };
    } finally {
      lock.close();
    }
  }
}

/** The distinct chunk hashes (hex) a table references. */
function hashSet(table: BlockTable): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < table.entryCount; i++) {
    if (!table.isZero(i)) {
      out.add(toHex(table.hashes.subarray(i * HASH_LEN, (i + 1) * HASH_LEN)));
    }
  }
  return out;
}

/** `true` when a process with `pid` exists on this machine. */
async function processAlive(pid: number): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}
