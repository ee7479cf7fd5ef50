/**
 * Lazy start: a {@linkcode ChunkSource} that serves a registry checkpoint's chunks from the
 * local store when they are there, and otherwise fetches them on first read:
 *
 * - one range request for the chunk and up to `readahead` chunks after it in its pack (packs
 *   hold new chunks in block order, so these are the next blocks of the disk), skipping none:
 *   the run stops at the first chunk that is local or already being fetched;
 * - every chunk is checked against its BLAKE3 before it is used or kept, so the guest never
 *   sees wrong bytes: a chunk that does not match fails that read (EIO);
 * - fetched chunks go into the local store, so the next run from the same checkpoint reads
 *   locally (the `.idx` is pinned in the store as a gc root: `Store.pinRemoteManifest`);
 * - a registry that stops answering fails the read with `unavailable` after the transport's
 *   retries with backoff (the device logs one line per outage; the guest sees EIO).
 *
 * @module
 */

import { parseReference, type RegistryClient } from "../oci/mod.ts";
import { ChunkBatch } from "./chunk_store.ts";
import type { ChunkSource } from "./chunk_source.ts";
import { StoreError } from "./errors.ts";
import { toHex } from "./hash.ts";
import {
  fetchRun,
  memoryChunks,
  openClient,
  planRuns,
  type RemoteCheckpoint,
  type RemoteOptions,
  resolveRemote,
} from "./remote.ts";
import type { ChunkEntry } from "./remote_format.ts";
import { memoryImageId } from "./memory.ts";
import type { MemoryImage, RemoteDeviceSource, Store } from "./store.ts";

/**
 * Chunks fetched after the one asked for, in the same request. Measured with
 * `bench/remote_bench.ts` (`docs/remote.md`): booting `run --from REF -- true`.
 */
export const DEFAULT_READAHEAD = 16;

/** Counters of a {@linkcode RemoteChunkSource}. */
export interface RemoteSourceStats {
  /** Chunks fetched from the registry. */
  fetchedChunks: number;
  /** Bytes fetched (as on the wire: compressed). */
  fetchedBytes: number;
  /** Range requests made. */
  requests: number;
  /** Reads served from the local store. */
  localReads: number;
}

/** Options of {@linkcode RemoteChunkSource}. */
export interface RemoteSourceOptions {
  /** Chunks fetched after the one asked for. @default DEFAULT_READAHEAD */
  readahead?: number;
  /** Where the one line per registry outage goes. @default console.error */
  log?: (line: string) => void;
}

/** Reads a registry checkpoint's chunks; see the module doc. */
export class RemoteChunkSource implements ChunkSource {
  /** Counters. */
  readonly stats: RemoteSourceStats = {
    fetchedChunks: 0,
    fetchedBytes: 0,
    requests: 0,
    localReads: 0,
  };
  readonly #store: Store;
  readonly #client: RegistryClient;
  readonly #remote: RemoteCheckpoint;
  readonly #readahead: number;
  /** Position of each chunk in `remote.entries` (sorted by pack and offset). */
  readonly #position = new Map<string, number>();
  readonly #inFlight = new Map<string, Promise<Uint8Array>>();
  readonly #log: (line: string) => void;
  /** Set by a failed fetch, cleared by a good one: one line per outage, not per read. */
  #failing = false;
  #closed = false;

  /**
   * @param store The local store (chunks are looked up and kept there).
   * @param client The registry client.
   * @param remote The resolved checkpoint.
   * @param options Readahead.
   */
  constructor(
    store: Store,
    client: RegistryClient,
    remote: RemoteCheckpoint,
    options: RemoteSourceOptions = {},
  ) {
    this.#store = store;
    this.#client = client;
    this.#remote = remote;
    this.#readahead = options.readahead ?? DEFAULT_READAHEAD;
    this.#log = options.log ?? ((line) => console.error(line));
    for (const [i, e] of remote.entries.entries()) this.#position.set(toHex(e.hash), i);
  }

  /** Chunk `hash` from the local store, else from the registry (then kept locally). */
  async read(hash: Uint8Array, expectedLength: number): Promise<Uint8Array> {
    const hex = toHex(hash);
    const pending = this.#inFlight.get(hex);
    if (pending) return await pending;
    // Synchronous checks up to the fetch's registration, so concurrent reads of neighbouring
    // blocks join one request instead of racing to start their own.
    if (existsLocally(this.#store, hash)) {
      try {
        const data = await this.#store.chunks.read(hash, expectedLength);
        this.stats.localReads++;
        return data;
      } catch (err) {
        // A damaged local copy (e.g. cut by a crash): fetch it again below.
        if (!(err instanceof StoreError)) throw err;
      }
    }
    return await this.#fetchFrom(hex);
  }

  /** Starts (or joins) the fetch of the run beginning at chunk `hex`. */
  #fetchFrom(hex: string): Promise<Uint8Array> {
    const start = this.#position.get(hex);
    if (start === undefined) {
      return Promise.reject(
        new StoreError(
          "corrupt_chunk",
          `Cannot read chunk ${hex}: it is in no pack of ${this.#remote.refText}`,
        ),
      );
    }
    const entries = this.#remote.entries;
    const run: ChunkEntry[] = [entries[start]!];
    for (let i = start + 1; i < entries.length && run.length <= this.#readahead; i++) {
      const prev = run[run.length - 1]!;
      const e = entries[i]!;
      const h = toHex(e.hash);
      if (e.pack !== prev.pack || e.offset !== prev.offset + prev.length) break;
      if (this.#inFlight.has(h) || existsLocally(this.#store, e.hash)) break;
      run.push(e);
    }
    const job = this.#fetchRun(run);
    const promises = run.map((_, k) => job.then((chunks) => chunks[k]!));
    for (const [k, e] of run.entries()) {
      const h = toHex(e.hash);
      const p = promises[k]!.then((c) => {
        if (c instanceof StoreError) throw c;
        return c;
      }).finally(() => {
        if (this.#inFlight.get(h) === p) this.#inFlight.delete(h);
      });
      // Readahead chunks nobody asked for must not turn into unhandled rejections.
      p.catch(() => {});
      this.#inFlight.set(h, p);
    }
    return this.#inFlight.get(hex)!;
  }

  async #fetchRun(run: ChunkEntry[]): Promise<(Uint8Array | StoreError)[]> {
    if (this.#closed) {
      throw new StoreError("closed", "Cannot fetch chunks: the device is closed");
    }
    let got;
    try {
      this.stats.requests++;
      got = await fetchRun(this.#client, this.#remote, run);
    } catch (err) {
      const error = new StoreError(
        "unavailable",
        `Cannot fetch chunk ${toHex(run[0]!.hash).slice(0, 16)}… from ${this.#remote.refText}: ` +
          (err as Error).message,
        { cause: err },
      );
      if (!this.#failing) {
        this.#failing = true;
        this.#log(
          `shuru: ${error.message}; reads of blocks not fetched yet fail with an I/O error ` +
            "until the registry answers again",
        );
      }
      throw error;
    }
    if (this.#failing) {
      this.#failing = false;
      this.#log(`shuru: ${this.#remote.refText} answers again; lazy reads resume`);
    }
    this.stats.fetchedBytes += got.bytes;
    for (const [k, e] of run.entries()) {
      const c = got.chunks[k]!;
      if (c instanceof StoreError) continue;
      this.stats.fetchedChunks++;
      // A cache: a crash may lose it (reads verify and fetch again), so no fdatasync here.
      await this.#store.chunks.put(e.hash, c, { sync: false }).catch(() => {});
    }
    return got.chunks;
  }

  /** Fetches the chunks of `hashes` the store lacks and keeps them durably (for a save). */
  async ensureLocal(hashes: readonly Uint8Array[], _expectedLength: number): Promise<void> {
    await this.fetchMissing(hashes, { action: "save" });
  }

  /**
   * Fetches the chunks of `hashes` the store lacks with merged range requests, checks each
   * against its hash and keeps them durably; `options.action` names what needs them in errors.
   */
  async fetchMissing(
    hashes: readonly Uint8Array[],
    options: { action: string },
  ): Promise<void> {
    const action = options.action;
    const wanted: ChunkEntry[] = [];
    const seen = new Set<string>();
    for (const h of hashes) {
      const hex = toHex(h);
      if (seen.has(hex) || await this.#store.chunks.has(h)) continue;
      seen.add(hex);
      const pos = this.#position.get(hex);
      if (pos === undefined) {
        throw new StoreError(
          "corrupt_chunk",
          `Cannot ${action}: chunk ${hex} is in no pack of ${this.#remote.refText}`,
        );
      }
      wanted.push(this.#remote.entries[pos]!);
    }
    wanted.sort((a, b) => a.pack - b.pack || a.offset - b.offset);
    const batch = new ChunkBatch(this.#store.chunks);
    try {
      for (const run of planRuns(wanted)) {
        let got;
        try {
          got = await fetchRun(this.#client, this.#remote, run);
        } catch (err) {
          throw new StoreError(
            "unavailable",
            `Cannot ${action}: fetching chunks from ${this.#remote.refText} failed: ` +
              (err as Error).message,
            { cause: err },
          );
        }
        this.stats.requests++;
        this.stats.fetchedBytes += got.bytes;
        for (const [k, e] of run.entries()) {
          const c = got.chunks[k]!;
          if (c instanceof StoreError) throw c;
          this.stats.fetchedChunks++;
          await batch.add(e.hash, c);
        }
      }
      await batch.finish();
    } catch (err) {
      batch.abort();
      throw err;
    }
  }

  /** Stops new fetches (fetches in flight finish on their own). */
  close(): void {
    this.#closed = true;
  }
}

function existsLocally(store: Store, hash: Uint8Array): boolean {
  try {
    Deno.lstatSync(store.chunks.pathOf(hash));
    return true;
  } catch {
    return false;
  }
}

/** A registry checkpoint opened for lazy reads. */
export interface OpenedRemote {
  /** What `Store.openDevice` takes. */
  source: { remote: RemoteDeviceSource };
  /** The resolved checkpoint (digest, config). */
  remote: RemoteCheckpoint;
  /** The chunk source (for its counters). */
  chunks: RemoteChunkSource;
}

/**
 * Resolves `refText` and prepares a lazy device source for it: pins its `.idx` in the store
 * and returns a {@linkcode RemoteChunkSource}. Reads nothing but the small blobs.
 */
export async function openRemoteCheckpoint(
  store: Store,
  refText: string,
  options: RemoteOptions & RemoteSourceOptions = {},
): Promise<OpenedRemote> {
  const client = openClient(parseReference(refText), options);
  const remote = await resolveRemote(store, client, refText);
  const manifestPath = await store.pinRemoteManifest(remote.digest.slice(7), remote.idxBytes);
  // SHURU_LAZY_READAHEAD overrides the default for measurements (bench/remote_bench.ts).
  const fromEnv = Number(Deno.env.get("SHURU_LAZY_READAHEAD") ?? NaN);
  const readahead = options.readahead ??
    (Number.isInteger(fromEnv) && fromEnv >= 0 ? fromEnv : undefined);
  const chunks = new RemoteChunkSource(store, client, remote, {
    ...(readahead !== undefined ? { readahead } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
  return {
    source: { remote: { name: remote.refText, manifestPath, chunks } },
    remote,
    chunks,
  };
}

/**
 * The memory image of an opened registry memory checkpoint, ready to materialize: every RAM
 * chunk the store lacks is fetched first (range requests merged as in a pull, each chunk
 * checked against its hash, kept durably), since the RAM file is written whole before the VM
 * starts; the disk stays lazy. Open the device first: its pinned `.idx` keeps these chunks
 * from gc.
 *
 * @throws {StoreError} `not_found` when the checkpoint has no memory; `unavailable` or
 *   `corrupt_chunk` when a RAM chunk cannot be fetched or does not match.
 */
export async function fetchRemoteMemory(opened: OpenedRemote): Promise<MemoryImage> {
  const { remote } = opened;
  const memory = remote.idx.memory;
  if (!memory) {
    throw new StoreError(
      "not_found",
      `Cannot restore the memory of ${remote.refText}: it saved the disk only`,
    );
  }
  await opened.chunks.fetchMissing(memoryChunks(remote.idx), {
    action: `restore the memory of ${remote.refText}`,
  });
  return {
    name: remote.refText,
    imageId: memoryImageId(memory.table),
    table: memory.table,
    state: memory.state,
    machine: memory.machine,
  };
}
