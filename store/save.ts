/**
 * The save pipeline: a frozen device state becomes a checkpoint. Only blocks whose place
 * changed since the device's last save are looked at; blocks still in the lower layer take
 * its hashes (a checkpoint's table, or the base cache's), the others are read, hashed and
 * written as chunks, and the manifest is written atomically under the shared store lock.
 *
 * @module
 */

import { addBlocks, baseTable } from "./base_cache.ts";
import { ChunkBatch, type ChunkStore, forEachLimit } from "./chunk_store.ts";
import {
  type BaseLower,
  type CheckpointLower,
  type CowDevice,
  type FrozenState,
  type SaveOptions,
  type SaveResult,
  WHERE_LOWER,
  WHERE_ZERO,
} from "./device.ts";
import { StoreError } from "./errors.ts";
import { newLeasePath } from "./gc.ts";
import { BlockTable, encodeManifest, type ManifestMeta } from "./manifest.ts";
import { type StoreDir, validateName } from "./store_dir.ts";

/** What the store knows of a device it opened. */
export interface OpenedDevice {
  /** Where the lower layer's block table comes from. */
  lower: { kind: "checkpoint"; checkpoint: CheckpointLower } | { kind: "base"; base: BaseLower };
  /** The leases it holds: of the manifest it was opened from, of the last one it saved. */
  leases: { lower?: string; saved?: string };
  /** The guest architecture using it, recorded in what it saves (`ManifestMeta.arch`). */
  arch?: string;
}

/** The store a save writes to. */
export interface SaveTarget {
  /** Its folder. */
  dir: StoreDir;
  /** Where new chunks go. */
  chunks: ChunkStore;
}

/** What a save writes: a device's frozen state, and what the store knows of the device. */
export interface SaveSource {
  /** The copy-on-write device being saved. */
  device: CowDevice;
  /** Its state at the snapshot. */
  frozen: FrozenState;
  /** The store's record of it. */
  opened: OpenedDevice;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Saves `source` as checkpoint `options.name`. */
export async function saveSnapshot(
  target: SaveTarget,
  source: SaveSource,
  options: SaveOptions & { name: string },
): Promise<SaveResult> {
  const { dir, chunks } = target;
  const { device, frozen, opened } = source;
  const name = options.name;
  validateName(name);
  const t0 = performance.now();
  const lock = await dir.lock(false);
  try {
    if (!options.overwrite && await exists(dir.checkpointPath(name))) {
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
      if (opened.lower.kind === "checkpoint") {
        lowerTable = opened.lower.checkpoint.table;
        // A lazily read remote checkpoint: fetch what the new checkpoint references.
        await opened.lower.checkpoint.ensureLocal(fromLower);
      } else {
        const base = await baseTable(dir, chunks, opened.lower.base, { blockSize: bs, phases });
        lowerTable = base.table;
        baseId = base.contentId;
        hashedBlocks += base.hashed;
        newChunks += base.written;
      }
      for (const i of fromLower) table.copyEntry(lowerTable, i);
    }
    const batch = new ChunkBatch(chunks);
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
        hashedBlocks += await addBlocks(data, first, { table, batch, blockSize: bs, phases });
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
    const parent = prev?.name ??
      (opened.lower.kind === "checkpoint" ? opened.lower.checkpoint.name : undefined);
    if (parent !== undefined) meta.parent = parent;
    if (baseId !== undefined) meta.base = baseId;
    if (options.image !== undefined) meta.image = options.image;
    if (opened.arch !== undefined) meta.arch = opened.arch;
    const bytes = encodeManifest(table, meta);
    const path = dir.checkpointPath(name);
    try {
      await dir.writeAtomic(path, bytes, options.overwrite ?? false);
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) {
        throw new StoreError("exists", `Cannot save checkpoint "${name}": it already exists`);
      }
      throw err;
    }
    phases.manifestMs = performance.now() - tm;
    // Keep what the next save will copy hashes from alive, even if this checkpoint is deleted.
    const newLease = await newLeasePath(dir);
    await Deno.link(path, newLease);
    if (opened.leases.saved) await Deno.remove(opened.leases.saved).catch(() => {});
    opened.leases.saved = newLease;
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
