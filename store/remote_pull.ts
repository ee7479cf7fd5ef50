/**
 * `checkpoint pull`: fetch a checkpoint from a registry into the local store, as a local
 * checkpoint that records where it came from.
 *
 * 1. Resolve the reference (manifest, config, `.idx`, chunk index; all verified by digest).
 * 2. Pin the `.idx` as a gc root, so chunks fetched from now on are not collected meanwhile.
 * 3. Fetch the chunks the store lacks with range requests over the packs (neighbours merged
 *    into one request), check each against its BLAKE3, write them the crash-safe way (temp
 *    file, fdatasync, rename). Chunks already in the store are not fetched: an interrupted
 *    pull resumes where it stopped.
 * 4. Publish the `.idx` (with `origin` = reference and digest; a memory checkpoint's RAM table,
 *    machine state and description kept) under the name: only now is the checkpoint listed, so
 *    nothing half-pulled ever is.
 *
 * A memory checkpoint's RAM chunks are chunks like the disk's: fetched in the same step 3.
 *
 * @module
 */

import { formatReference, parseReference, type Reference } from "../oci/mod.ts";
import { ChunkBatch, forEachLimit } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { toHex } from "./hash.ts";
import { encodeManifest } from "./manifest.ts";
import {
  fetchRun,
  openClient,
  planRuns,
  referencedChunks,
  type RemoteOptions,
  resolveRemote,
  type TransferProgress,
} from "./remote.ts";
import type { ChunkEntry } from "./remote_format.ts";
import { type Store, validateName } from "./store.ts";

/** Options of {@linkcode pullCheckpoint}. */
export interface PullOptions extends RemoteOptions {
  /** Local name (default: the repository's last component). */
  name?: string;
  /** Replace an existing checkpoint of that name. */
  overwrite?: boolean;
  /** Range requests in flight. @default 4 */
  concurrency?: number;
  /** Called as chunks arrive. */
  onProgress?: (p: TransferProgress) => void;
}

/** What a pull did. */
export interface PullResult {
  /** The local checkpoint's name. */
  name: string;
  /** The reference pulled. */
  ref: string;
  /** The manifest's digest. */
  digest: string;
  /** Distinct chunks the checkpoint uses. */
  chunks: number;
  /** Chunks fetched now. */
  fetchedChunks: number;
  /** Bytes fetched (compressed, as on the wire, ranges included). */
  fetchedBytes: number;
  /** Range requests made. */
  requests: number;
  /** Disk size in bytes. */
  diskSize: number;
  /** Wall time in milliseconds. */
  elapsedMs: number;
}

/** The default local name of a pulled reference: its repository's last component. */
export function defaultPullName(ref: Reference): string {
  return ref.repository.slice(ref.repository.lastIndexOf("/") + 1);
}

/** Pulls checkpoint `refText` into `store`; see the module doc. */
export async function pullCheckpoint(
  store: Store,
  refText: string,
  options: PullOptions = {},
): Promise<PullResult> {
  const t0 = performance.now();
  const ref = parseReference(refText);
  const name = options.name ?? defaultPullName(ref);
  validateName(name);
  if (!options.overwrite && await store.has(name)) {
    throw new StoreError(
      "exists",
      `Cannot pull ${formatReference(ref)} as checkpoint "${name}": it already exists ` +
        "(give another NAME, or --overwrite)",
    );
  }
  const client = openClient(ref, options);
  const remote = await resolveRemote(store, client, refText);
  // Kept after a failure, so chunks fetched so far survive a gc until the pull is resumed.
  const pin = await store.pinRemoteManifest(remote.digest.slice(7), remote.idxBytes);
  const used = new Set(referencedChunks(remote.idx).map(toHex));
  const table = remote.idx.table;
  const missing: ChunkEntry[] = [];
  for (const e of remote.entries) {
    if (used.has(toHex(e.hash)) && !(await store.chunks.has(e.hash))) missing.push(e);
  }
  const bs = remote.config.blockSize;
  const progress: TransferProgress = {
    phase: "download",
    doneBytes: 0,
    totalBytes: missing.length * bs,
    doneChunks: 0,
    totalChunks: missing.length,
    wireBytes: 0,
  };
  options.onProgress?.({ ...progress });
  const runs = planRuns(missing);
  const batch = new ChunkBatch(store.chunks);
  try {
    await forEachLimit(runs, options.concurrency ?? 4, async (run) => {
      const got = await fetchRun(client, remote, run);
      for (const [k, e] of run.entries()) {
        const chunk = got.chunks[k]!;
        if (chunk instanceof StoreError) throw chunk;
        await batch.add(e.hash, chunk);
      }
      progress.doneChunks += run.length;
      progress.doneBytes += run.length * bs;
      progress.wireBytes += got.bytes;
      options.onProgress?.({ ...progress });
    });
    await batch.finish();
  } catch (err) {
    batch.abort();
    throw err;
  }
  const meta = { ...remote.idx.meta, origin: { ref: remote.refText, digest: remote.digest } };
  const idx = encodeManifest(table, meta, remote.idx.memory ? { memory: remote.idx.memory } : {});
  await store.publishCheckpoint(name, idx, {
    overwrite: options.overwrite ?? false,
  });
  // The published checkpoint references the chunks now; the pin was for the way there.
  await Deno.remove(pin).catch(() => {});
  return {
    name,
    ref: remote.refText,
    digest: remote.digest,
    chunks: used.size,
    fetchedChunks: missing.length,
    fetchedBytes: progress.wireBytes,
    requests: runs.length,
    diskSize: remote.config.diskSize,
    elapsedMs: performance.now() - t0,
  };
}
