/**
 * The base-image cache: the block table of a base image file, ingested once (its non-zero
 * blocks hashed and stored as chunks) and found again by the file's identity (device, inode,
 * size, mtime), so a save from a base hashes only the blocks the guest changed.
 *
 * Not ctime: a new hard link to the file changes it, and the asset builder links an unchanged
 * root filesystem into each new asset version while sandboxes may be running on it. Base images
 * are written once and never edited in place, so mtime with the inode is enough.
 *
 * ```
 * bases/ID.idx                 block table of a base image, ID = hash of its content's table
 * bases/file-DEV-INO-BS.json   which ID a base file has, valid while (size, mtime) match
 * ```
 *
 * @module
 */

import { ChunkBatch, type ChunkStore } from "./chunk_store.ts";
import type { BaseLower } from "./device.ts";
import { StoreError } from "./errors.ts";
import { blake3, isZero, toHex } from "./hash.ts";
import { BlockTable, encodeManifest } from "./manifest.ts";
import type { StoreDir } from "./store_dir.ts";

interface BaseKey {
  size: number;
  mtimeMs: number;
  contentId: string;
}

/** Time spent per phase of a save (filled in as it goes). */
export interface SavePhases {
  /** Hashing blocks. */
  hashMs: number;
  /** Writing chunks. */
  writeMs: number;
  /** Syncing chunks. */
  syncMs: number;
}

/** A base image's block table and what finding it cost. */
export interface BaseTable {
  /** One hash (or zero) per block of the base image. */
  table: BlockTable;
  /** Its content id (the name of its cached manifest). */
  contentId: string;
  /** Blocks hashed to build it (0 from the cache). */
  hashed: number;
  /** Chunks written to build it. */
  written: number;
}

/**
 * Hashes the non-zero blocks of `data` (blocks `first`, `first + 1`, ...), records each hash in
 * `into.table` and queues the block in `into.batch`; returns how many blocks it hashed. The one
 * way blocks become chunks, for a base image and for a save.
 */
export async function addBlocks(
  data: Uint8Array,
  first: number,
  into: { table: BlockTable; batch: ChunkBatch; blockSize: number; phases?: SavePhases },
): Promise<number> {
  const bs = into.blockSize;
  let hashed = 0;
  for (let k = 0; k * bs < data.length; k++) {
    const block = data.subarray(k * bs, (k + 1) * bs);
    if (isZero(block)) continue;
    const th = performance.now();
    const h = blake3(block);
    if (into.phases) into.phases.hashMs += performance.now() - th;
    hashed++;
    into.table.set(first + k, h);
    await into.batch.add(h, block);
  }
  return hashed;
}

/** The block table of a base image: from the cache when its identity matches, else ingested. */
export async function baseTable(
  dir: StoreDir,
  chunks: ChunkStore,
  lower: BaseLower,
  options: { blockSize: number; phases?: SavePhases },
): Promise<BaseTable> {
  const { blockSize, phases } = options;
  const now = await Deno.stat(lower.name);
  const opened = lower.stat;
  if (
    now.dev !== opened.dev || now.ino !== opened.ino || now.size !== opened.size ||
    now.mtime?.getTime() !== opened.mtime?.getTime()
  ) {
    throw new StoreError(
      "invalid_argument",
      `Cannot save: base image ${lower.name} changed while the device was open`,
    );
  }
  const keyPath = dir.join("bases", `file-${opened.dev}-${opened.ino}-${blockSize}.json`);
  const key: Omit<BaseKey, "contentId"> = {
    size: opened.size,
    mtimeMs: opened.mtime?.getTime() ?? 0,
  };
  try {
    const cached = JSON.parse(await Deno.readTextFile(keyPath)) as BaseKey;
    if (
      cached.size === key.size && cached.mtimeMs === key.mtimeMs &&
      /^[0-9a-f]{64}$/.test(cached.contentId)
    ) {
      const m = await dir.readManifest(dir.join("bases", `${cached.contentId}.idx`));
      if (m.table.blockSize === blockSize && m.table.diskSize === lower.size) {
        return { table: m.table, contentId: cached.contentId, hashed: 0, written: 0 };
      }
    }
  } catch {
    // No usable cache entry: ingest below.
  }
  const table = new BlockTable(blockSize, lower.size);
  const slab = Math.max(1, Math.floor(4 * 1024 * 1024 / blockSize));
  let hashed = 0;
  const batch = new ChunkBatch(chunks);
  try {
    for (let first = 0; first < table.entryCount; first += slab) {
      const count = Math.min(slab, table.entryCount - first);
      const buf = new Uint8Array(count * blockSize);
      await lower.read(first * blockSize, buf);
      hashed += await addBlocks(buf, first, {
        table,
        batch,
        blockSize,
        ...(phases ? { phases } : {}),
      });
    }
    await batch.finish();
  } catch (err) {
    batch.abort();
    throw err;
  }
  if (phases) {
    phases.writeMs += batch.writeMs;
    phases.syncMs += batch.syncMs;
  }
  const geometry = new TextEncoder().encode(`${blockSize}:${lower.size}:`);
  const contentId = toHex(blake3(geometry, table.hashes));
  await dir.writeAtomic(
    dir.join("bases", `${contentId}.idx`),
    encodeManifest(table, { createdAt: Date.now() }),
    true,
  );
  await dir.writeAtomic(
    keyPath,
    new TextEncoder().encode(JSON.stringify({ ...key, contentId })),
    true,
  );
  return { table, contentId, hashed, written: batch.written };
}
