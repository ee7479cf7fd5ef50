/**
 * What push, pull and lazy reads share: a registry client with the user's docker credentials,
 * a local cache of immutable small blobs (manifests, configs, chunk indexes) by digest, and
 * {@linkcode resolveRemote}, which turns a reference into a validated checkpoint artifact.
 *
 * ```
 * <store>/remote/blobs/<sha256 hex>   manifests, configs, chunk indexes, `.idx` layers
 * ```
 *
 * Cached files are written atomically and checked against their digest when read, so a damaged
 * one is fetched again, never used.
 *
 * @module
 */

import { join } from "node:path";
import {
  formatReference,
  manifestTarget,
  openRegistryClient,
  parseReference,
  type Reference,
  type RegistryAccess,
  type RegistryClient,
  sha256Digest,
} from "../oci/mod.ts";
import { STORE_DIR_MODE, STORE_FILE_MODE } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { type BlockTable, decodeManifest, type Manifest, type ManifestMeta } from "./manifest.ts";
import {
  type CheckpointConfig,
  type ChunkEntry,
  decodeChunk,
  decodeChunkIndex,
  parseArtifact,
  parseConfig,
  type ParsedArtifact,
} from "./remote_format.ts";
import { toHex } from "./hash.ts";
import type { Store } from "./store.ts";

/** How to reach registries: what `--insecure-registry` and friends set. */
export type RemoteOptions = RegistryAccess;

/** A client for `ref`'s registry with the user's docker credentials. */
export const openClient = openRegistryClient;

/** Small immutable blobs by digest under `<store>/remote/blobs/`. */
export class BlobCache {
  readonly #dir: string;

  /** @param store The store whose folder holds the cache. */
  constructor(store: Store) {
    this.#dir = join(store.dir, "remote", "blobs");
  }

  #path(digest: string): string {
    return join(this.#dir, digest.replace(/^sha256:/, ""));
  }

  /** The cached bytes of `digest`, or `null` (missing or damaged). */
  async get(digest: string): Promise<Uint8Array | null> {
    try {
      const bytes = await Deno.readFile(this.#path(digest));
      return (await sha256Digest(bytes)) === digest ? bytes : null;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  }

  /** Stores `bytes` (whose digest the caller verified) under `digest`. */
  async put(digest: string, bytes: Uint8Array): Promise<void> {
    await Deno.mkdir(this.#dir, { recursive: true, mode: STORE_DIR_MODE });
    const path = this.#path(digest);
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.writeFile(tmp, bytes, { mode: STORE_FILE_MODE });
      await Deno.rename(tmp, path);
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
  }

  /** Blob `digest` of `size` bytes from the cache, else from the registry (then cached). */
  async fetch(client: RegistryClient, repo: string, digest: string, size: number) {
    const cached = await this.get(digest);
    if (cached && cached.length === size) return cached;
    const bytes = await client.getBlob(repo, digest, size);
    await this.put(digest, bytes);
    return bytes;
  }
}

/**
 * The distinct chunks a checkpoint's `.idx` references, in block order of first use (the order
 * new packs keep, so a pack holds neighbouring blocks): what a push sends, a pull fetches and a
 * resolve checks the chunk index for. The one place that knows which tables an `.idx` has: the
 * disk's, then a memory checkpoint's RAM table (so RAM chunks fill their own packs after the
 * disk's; a RAM chunk equal to a disk chunk is listed once).
 */
export function referencedChunks(idx: Manifest): Uint8Array[] {
  return distinctChunks(idx.memory ? [idx.table, idx.memory.table] : [idx.table]);
}

/** The distinct chunks of a memory checkpoint's RAM table (none for a disk-only one). */
export function memoryChunks(idx: Manifest): Uint8Array[] {
  return idx.memory ? distinctChunks([idx.memory.table]) : [];
}

function distinctChunks(tables: readonly BlockTable[]): Uint8Array[] {
  const order: Uint8Array[] = [];
  const seen = new Set<string>();
  for (const table of tables) {
    for (let i = 0; i < table.entryCount; i++) {
      const h = table.get(i);
      if (!h) continue;
      const hex = toHex(h);
      if (seen.has(hex)) continue;
      seen.add(hex);
      order.push(h.slice());
    }
  }
  return order;
}

/** A checkpoint in a registry, validated and ready to read. */
export interface RemoteCheckpoint {
  /** The parsed reference. */
  ref: Reference;
  /** The reference as text. */
  refText: string;
  /** The manifest's digest. */
  digest: string;
  /** The manifest's bytes. */
  manifestBytes: Uint8Array;
  /** The manifest's parts. */
  artifact: ParsedArtifact;
  /** The config. */
  config: CheckpointConfig;
  /** The `.idx` manifest's bytes, as pushed. */
  idxBytes: Uint8Array;
  /** The decoded `.idx`. */
  idx: Manifest;
  /** Where each chunk lives, sorted by pack and offset. */
  entries: ChunkEntry[];
  /** The same, by chunk hash (hex). */
  byHash: Map<string, ChunkEntry>;
}

/** Reads `ref`'s manifest: from the cache when pinned by digest, else from the registry. */
async function manifestOf(
  client: RegistryClient,
  ref: Reference,
  cache: BlobCache,
): Promise<{ bytes: Uint8Array; mediaType: string; digest: string }> {
  if (ref.digest) {
    const cached = await cache.get(ref.digest);
    if (cached) return { bytes: cached, mediaType: "", digest: ref.digest };
  }
  const m = await client.getManifest(ref.repository, manifestTarget(ref));
  await cache.put(m.digest, m.bytes);
  return m;
}

/**
 * Resolves `refText` to a checkpoint artifact: the manifest (refused unless it is a shuru
 * checkpoint), its config, `.idx` and chunk index, each verified by digest, the `.idx`
 * decoded and checked against the config, and every chunk the table uses present in the index.
 */
export async function resolveRemote(
  store: Store,
  client: RegistryClient,
  refText: string,
): Promise<RemoteCheckpoint> {
  const ref = parseReference(refText);
  const text = formatReference(ref);
  const cache = new BlobCache(store);
  const m = await manifestOf(client, ref, cache);
  const artifact = parseArtifact(m.bytes, m.mediaType, text);
  const repo = ref.repository;
  const config = parseConfig(
    await cache.fetch(client, repo, artifact.config.digest, artifact.config.size),
    text,
  );
  const idxBytes = await cache.fetch(client, repo, artifact.idx.digest, artifact.idx.size);
  let idx: Manifest;
  try {
    idx = decodeManifest(idxBytes);
  } catch (err) {
    throw new StoreError(
      "bad_manifest",
      `Cannot use ${text} as a checkpoint: its .idx layer is damaged (${(err as Error).message})`,
      { cause: err },
    );
  }
  if (
    idx.header.blockSize !== config.blockSize || idx.header.diskSize !== config.diskSize ||
    idx.header.usedCount !== config.usedBlocks
  ) {
    throw new StoreError(
      "bad_manifest",
      `Cannot use ${text} as a checkpoint: its config and .idx disagree on the geometry`,
    );
  }
  const memorySize = idx.memory?.table.diskSize;
  if ((config.formatVersion === 2) !== (memorySize !== undefined)) {
    throw new StoreError(
      "bad_manifest",
      `Cannot use ${text} as a checkpoint: its config says format version ` +
        `${config.formatVersion}, its .idx ${memorySize !== undefined ? "holds" : "has no"} memory`,
    );
  }
  if (config.memorySize !== memorySize) {
    throw new StoreError(
      "bad_manifest",
      `Cannot use ${text} as a checkpoint: its config and .idx disagree on the memory size`,
    );
  }
  if (config.arch !== undefined && config.arch !== (idx.meta.arch ?? "x86_64")) {
    throw new StoreError(
      "bad_manifest",
      `Cannot use ${text} as a checkpoint: its config says ${config.arch}, its .idx ` +
        `${idx.meta.arch ?? "x86_64"}`,
    );
  }
  const entries = decodeChunkIndex(
    await cache.fetch(client, repo, artifact.chunks.digest, artifact.chunks.size),
    artifact.packs.map((p) => p.size),
    config.blockSize,
  );
  const byHash = new Map<string, ChunkEntry>();
  for (const e of entries) byHash.set(toHex(e.hash), e);
  for (const h of referencedChunks(idx)) {
    if (!byHash.has(toHex(h))) {
      throw new StoreError(
        "bad_manifest",
        `Cannot use ${text} as a checkpoint: its chunk ${toHex(h)} is in no pack`,
      );
    }
  }
  return {
    ref,
    refText: text,
    digest: m.digest,
    manifestBytes: m.bytes,
    artifact,
    config,
    idxBytes,
    idx,
    entries,
    byHash,
  };
}

/** What a registry checkpoint records, read without its chunks. */
export interface RemoteCheckpointInfo {
  /** The reference as text. */
  ref: string;
  /** The manifest's digest. */
  digest: string;
  /** The artifact's config. */
  config: CheckpointConfig;
  /** The `.idx`'s metadata: the architecture, the image and its settings, the parent. */
  meta: ManifestMeta;
}

/**
 * Resolves `refText` (manifest, config, `.idx`, chunk index: small blobs, cached by digest) and
 * returns what it records, for a caller that must know the guest architecture or the image
 * before it boots (`shuru start` builds that architecture's assets first). Fetches no chunk.
 */
export async function inspectRemoteCheckpoint(
  store: Store,
  refText: string,
  options: RemoteOptions = {},
): Promise<RemoteCheckpointInfo> {
  const client = openClient(parseReference(refText), options);
  const remote = await resolveRemote(store, client, refText);
  return {
    ref: remote.refText,
    digest: remote.digest,
    config: remote.config,
    meta: remote.idx.meta,
  };
}

/** Options of {@linkcode planRuns}. */
export interface RunPlanOptions {
  /** Bytes between two wanted chunks of a pack fetched anyway to save a request. @default 256 KiB */
  maxGap?: number;
  /** Largest single range request in bytes. @default 8 MiB */
  maxRun?: number;
}

/**
 * Groups wanted chunks (sorted by pack and offset, as in the index) into range requests: one
 * per run of chunks in the same pack whose gaps are small, up to `maxRun` bytes each.
 */
export function planRuns(
  wanted: readonly ChunkEntry[],
  options: RunPlanOptions = {},
): ChunkEntry[][] {
  const maxGap = options.maxGap ?? 256 * 1024;
  const maxRun = options.maxRun ?? 8 * 1024 * 1024;
  const runs: ChunkEntry[][] = [];
  let run: ChunkEntry[] = [];
  for (const e of wanted) {
    const first = run[0];
    const last = run[run.length - 1];
    if (
      first && last && last.pack === e.pack && e.offset >= last.offset + last.length &&
      e.offset - (last.offset + last.length) <= maxGap &&
      e.offset + e.length - first.offset <= maxRun
    ) {
      run.push(e);
    } else {
      if (run.length > 0) runs.push(run);
      run = [e];
    }
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/**
 * Fetches one run of chunks (same pack, ascending offsets) with one range request, decodes
 * each and checks it against its hash. Returns, in the run's order, each chunk or the
 * `corrupt_chunk` error of a chunk whose bytes do not match, and the bytes fetched.
 */
export async function fetchRun(
  client: RegistryClient,
  remote: RemoteCheckpoint,
  run: readonly ChunkEntry[],
): Promise<{ chunks: (Uint8Array | StoreError)[]; bytes: number }> {
  const first = run[0]!;
  const last = run[run.length - 1]!;
  const pack = remote.artifact.packs[first.pack]!;
  const start = first.offset;
  const length = last.offset + last.length - start;
  const bytes = await client.getBlobRange(remote.ref.repository, pack.digest, {
    offset: start,
    length,
    blobSize: pack.size,
  });
  const chunks = run.map((e) => {
    try {
      return decodeChunk(
        e,
        bytes.subarray(e.offset - start, e.offset - start + e.length),
        remote.config.blockSize,
      );
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      return new StoreError(
        "corrupt_chunk",
        `${err.message} (pack ${pack.digest.slice(0, 19)}… of ${remote.refText}): the ` +
          "registry served wrong bytes",
        { cause: err },
      );
    }
  });
  return { chunks, bytes: length };
}

/** Progress of a push or pull, for a progress line (bytes are chunk bytes, uncompressed). */
export interface TransferProgress {
  /** What is happening. */
  phase: "upload" | "download";
  /** Chunk bytes done. */
  doneBytes: number;
  /** Chunk bytes to do. */
  totalBytes: number;
  /** Chunks done. */
  doneChunks: number;
  /** Chunks to do. */
  totalChunks: number;
  /** Bytes that crossed the network so far (compressed). */
  wireBytes: number;
}
