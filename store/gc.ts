/**
 * Garbage collection and leases. A lease is a hard link in `leases/` to a manifest an open
 * device still needs (the checkpoint it was opened from, the last one it saved), named after
 * the process that holds it; gc keeps every chunk a checkpoint, a base cache or a live lease
 * references and removes the rest.
 *
 * @module
 */

import { processAlive, processId } from "../host/mod.ts";
import type { ChunkStore } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { HASH_LEN, toHex } from "./hash.ts";
import type { BlockTable, Manifest } from "./manifest.ts";
import { memoryImageId } from "./memory.ts";
import type { StoreDir } from "./store_dir.ts";

/** What gc did. */
export interface GcReport {
  /** Chunks no manifest referenced, now deleted. */
  removedChunks: number;
  /** Bytes freed by removing chunks. */
  freedBytes: number;
  /** Chunks some checkpoint, base cache or lease still references. */
  keptChunks: number;
  /** Bytes of the chunks kept. */
  keptBytes: number;
  /** Leftover temporary files removed. */
  removedTempFiles: number;
  /** Leases of dead processes removed. */
  removedLeases: number;
  /** Base-image caches removed (with `pruneBaseCache`). */
  removedBaseCaches: number;
  /** Cached RAM files removed (no checkpoint or running device refers to their image). */
  removedMemoryFiles: number;
}

/** Options of {@linkcode collectGarbage}. */
export interface GcOptions {
  /** Also drop the base-image hash caches (the next save from a base re-reads it). */
  pruneBaseCache?: boolean;
}

/** The distinct chunk hashes (hex) a table references. */
export function hashSet(table: BlockTable): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < table.entryCount; i++) {
    if (!table.isZero(i)) {
      out.add(toHex(table.hashes.subarray(i * HASH_LEN, (i + 1) * HASH_LEN)));
    }
  }
  return out;
}

/** The distinct chunk hashes (hex) a manifest references: disk and, if any, memory. */
export function manifestHashes(m: Manifest): Set<string> {
  const out = hashSet(m.table);
  if (m.memory) { for (const h of hashSet(m.memory.table)) out.add(h); }
  return out;
}

/** A new lease path, naming this process by pid and start time: `PID.START.UUID.idx`. */
export async function newLeasePath(dir: StoreDir): Promise<string> {
  const self = await processId(Deno.pid);
  return dir.join("leases", `${Deno.pid}.${self?.startTime ?? 0}.${crypto.randomUUID()}.idx`);
}

/** Hard-links `manifest` into `leases/` under the shared lock; returns the lease path. */
export async function takeLease(dir: StoreDir, manifest: string): Promise<string> {
  const lock = await dir.lock(false);
  try {
    const path = await newLeasePath(dir);
    await Deno.link(manifest, path);
    return path;
  } finally {
    lock.close();
  }
}

/**
 * Whether the process that took lease `file` (`PID.START.UUID.idx`) still runs: same pid and
 * start time, so a reused pid keeps no chunk alive. A lease without a start time (an older
 * shuru's `PID.UUID.idx`) counts by its pid alone.
 */
async function leaseHolderAlive(file: string): Promise<boolean> {
  const [pidText, startText] = file.split(".");
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const startTime = Number(startText);
  if (Number.isInteger(startTime) && startTime > 0) return await processAlive({ pid, startTime });
  return (await processId(pid)) !== undefined;
}

/**
 * Removes chunks no manifest references. Runs under the exclusive store lock, so no save
 * (which holds the lock shared from its first chunk to its manifest rename) and no device
 * open (which links its manifest into `leases/` under the shared lock) runs meanwhile.
 * Chunks an open device still needs are kept through its lease.
 */
export async function collectGarbage(
  dir: StoreDir,
  chunks: ChunkStore,
  options: GcOptions = {},
): Promise<GcReport> {
  const lock = await dir.lock(true);
  try {
    const report: GcReport = {
      removedChunks: 0,
      freedBytes: 0,
      keptChunks: 0,
      keptBytes: 0,
      removedTempFiles: 0,
      removedLeases: 0,
      removedBaseCaches: 0,
      removedMemoryFiles: 0,
    };
    // No save holds the lock, so everything in tmp/ is left over from a crash.
    for await (const e of Deno.readDir(dir.join("tmp"))) {
      await Deno.remove(dir.join("tmp", e.name), { recursive: true }).catch(() => {});
      report.removedTempFiles++;
    }
    for await (const e of Deno.readDir(dir.join("leases"))) {
      if (await leaseHolderAlive(e.name)) continue;
      await Deno.remove(dir.join("leases", e.name)).catch(() => {});
      report.removedLeases++;
    }
    if (options.pruneBaseCache) {
      for await (const e of Deno.readDir(dir.join("bases"))) {
        await Deno.remove(dir.join("bases", e.name)).catch(() => {});
        if (e.name.endsWith(".idx")) report.removedBaseCaches++;
      }
    }
    const live = new Set<string>();
    const liveImages = new Set<string>();
    const roots = [
      ...(await dir.names()).map((n) => dir.checkpointPath(n)),
      ...await dir.rootFiles(["bases", "leases"]),
    ];
    for (const path of roots) {
      let manifest: Manifest;
      try {
        manifest = await dir.readManifest(path);
      } catch (err) {
        throw new StoreError(
          "bad_manifest",
          `Cannot collect garbage: manifest ${path} is unreadable, so its chunks are unknown ` +
            `(${(err as Error).message}); delete or restore it first`,
          { cause: err },
        );
      }
      for (const h of manifestHashes(manifest)) live.add(h);
      if (manifest.memory) liveImages.add(memoryImageId(manifest.memory.table));
    }
    for await (const e of Deno.readDir(dir.join("memory"))) {
      const id = e.name.split(".")[0]!;
      if (liveImages.has(id)) continue;
      await Deno.remove(dir.join("memory", e.name)).catch(() => {});
      if (e.name.endsWith(".ram")) report.removedMemoryFiles++;
    }
    for await (const [hex, size] of chunks.list()) {
      if (live.has(hex)) {
        report.keptChunks++;
        report.keptBytes += size;
      } else {
        await chunks.removeHex(hex);
        report.removedChunks++;
        report.freedBytes += size;
      }
    }
    return report;
  } finally {
    lock.close();
  }
}
