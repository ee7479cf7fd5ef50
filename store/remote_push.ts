/**
 * `checkpoint push`: upload a checkpoint as an OCI artifact (`remote_format.ts`), sending only
 * what the registry lacks.
 *
 * How the pusher knows what the registry has:
 *
 * 1. **Earlier pushes.** It reads the chunk indexes of the checkpoints already in the target
 *    repository (the manifest at the target tag, then up to `discoverTags` other tags) and of
 *    the registry checkpoints this one descends from (the `origin` of it and of its local
 *    parents, e.g. the checkpoint it was pulled from, in any repository of the same
 *    registry). Indexes are cached by digest, so this costs a few HEAD requests once warm.
 * 2. **Reuse.** A chunk found there is not sent: the new manifest references the pack that
 *    holds it, confirmed with `HEAD` (same repository) or a cross-repository mount (another
 *    repository). A pack is reused only if at least `minLiveFraction` of its bytes are chunks
 *    this checkpoint uses, so packs of long-gone data are not dragged along forever; the
 *    chunks of a pack below that are packed again.
 * 3. **New packs are named by content.** The remaining chunks are packed in block order into
 *    packs of about `packBytes`; a pack's digest depends only on its chunks, so `HEAD` before
 *    each upload finds the packs an interrupted push already sent, and a re-run sends only the
 *    rest (the plan is the same because the tag is moved last, by the manifest).
 *
 * @module
 */

import {
  type Descriptor,
  formatReference,
  parseReference,
  type RegistryClient,
  sha256Digest,
} from "../oci/mod.ts";
import { StoreError } from "./errors.ts";
import { toHex } from "./hash.ts";
import { decodeManifest } from "./manifest.ts";
import {
  BlobCache,
  openClient,
  referencedChunks,
  type RemoteOptions,
  type TransferProgress,
} from "./remote.ts";
import {
  buildArtifact,
  type CheckpointConfig,
  type ChunkEntry,
  decodeChunkIndex,
  encodeChunk,
  encodeChunkIndex,
  MEDIA,
  parseArtifact,
  parseConfig,
} from "./remote_format.ts";
import type { Store } from "./store.ts";

/** Options of {@linkcode pushCheckpoint}. */
export interface PushOptions extends RemoteOptions {
  /** Compress chunks with zstd (each stored raw when that is smaller). @default true */
  compress?: boolean;
  /** Target size of a new pack in bytes. @default 16 MiB */
  packBytes?: number;
  /** Pack uploads in flight. @default 2 */
  concurrency?: number;
  /** Other tags of the repository whose checkpoints are read for reusable chunks. @default 16 */
  discoverTags?: number;
  /** Reuse a pack only if this fraction of its bytes is used. @default 0.25 */
  minLiveFraction?: number;
  /** Called as packs go out. */
  onProgress?: (p: TransferProgress) => void;
  /** Called with one-line notes (what was reused, what was skipped). */
  onNote?: (line: string) => void;
}

/** What a push did. */
export interface PushResult {
  /** The local checkpoint. */
  name: string;
  /** The reference pushed to. */
  ref: string;
  /** The manifest's digest. */
  digest: string;
  /** Distinct chunks of the checkpoint. */
  chunks: number;
  /** Chunks found in packs the registry already had (not sent). */
  reusedChunks: number;
  /** Chunks in new packs. */
  newChunks: number;
  /** Packs the manifest references. */
  packs: number;
  /** New packs (sent now, or found already uploaded by an interrupted push). */
  newPacks: number;
  /** New packs found already uploaded (`HEAD`): not sent again. */
  resumedPacks: number;
  /** Packs mounted from another repository. */
  mountedPacks: number;
  /** Blob bytes sent (packs, index, `.idx`, config; compressed as on the wire). */
  bytesSent: number;
  /** Uncompressed bytes of the chunks in new packs. */
  newChunkBytes: number;
  /** Wall time in milliseconds. */
  elapsedMs: number;
}

/** A chunk the registry has: its pack and where in it. */
interface KnownChunk {
  repo: string;
  pack: Descriptor;
  entry: ChunkEntry;
}

interface Candidate {
  repo: string;
  digest: string;
}

/** Reads a candidate's chunk index (cached) into `known`; `false` when it is not usable. */
async function learnCandidate(
  client: RegistryClient,
  cache: BlobCache,
  c: Candidate,
  blockSize: number,
  known: Map<string, KnownChunk>,
): Promise<boolean> {
  let bytes = await cache.get(c.digest);
  let mediaType = "";
  if (!bytes) {
    const m = await client.getManifest(c.repo, c.digest);
    bytes = m.bytes;
    mediaType = m.mediaType;
    await cache.put(c.digest, bytes);
  }
  const where = `${client.registry}/${c.repo}@${c.digest}`;
  const artifact = parseArtifact(bytes, mediaType, where);
  const config = parseConfig(
    await cache.fetch(client, c.repo, artifact.config.digest, artifact.config.size),
    where,
  );
  if (config.blockSize !== blockSize) return false;
  const entries = decodeChunkIndex(
    await cache.fetch(client, c.repo, artifact.chunks.digest, artifact.chunks.size),
    artifact.packs.map((p) => p.size),
    blockSize,
  );
  for (const e of entries) {
    const hex = toHex(e.hash);
    if (!known.has(hex)) known.set(hex, { repo: c.repo, pack: artifact.packs[e.pack]!, entry: e });
  }
  return true;
}

/** Pushes checkpoint `name` of `store` to `refText`; see the module doc. */
export async function pushCheckpoint(
  store: Store,
  name: string,
  refText: string,
  options: PushOptions = {},
): Promise<PushResult> {
  const t0 = performance.now();
  const ref = parseReference(refText);
  if (ref.digest !== undefined || ref.tag === undefined) {
    throw new StoreError(
      "invalid_argument",
      `Cannot push to ${refText}: give a tag (REGISTRY/REPOSITORY:TAG), not a digest`,
    );
  }
  const tag = ref.tag;
  const repo = ref.repository;
  const text = formatReference(ref);
  const note = options.onNote ?? (() => {});
  const idxBytes = await store.readManifestBytes(name);
  const manifest = decodeManifest(idxBytes);
  const table = manifest.table;
  const bs = table.blockSize;

  // Distinct chunks in block order of first use (the order new packs keep).
  const order = referencedChunks(manifest);
  for (const h of order) {
    if (!(await store.chunks.has(h))) {
      throw new StoreError(
        "corrupt_chunk",
        `Cannot push checkpoint "${name}": chunk ${toHex(h)} is missing from the store`,
      );
    }
  }

  const client = openClient(ref, options);
  const cache = new BlobCache(store);

  // 1. What the registry has: earlier pushes to this repository, and this checkpoint's origins.
  const candidates: Candidate[] = [];
  const current = await client.headManifest(repo, tag);
  if (current?.digest) candidates.push({ repo, digest: current.digest });
  let meta = manifest.meta;
  for (let depth = 0; depth < 8; depth++) {
    if (meta.origin) {
      try {
        const o = parseReference(meta.origin.ref);
        if (o.registry === ref.registry) {
          candidates.push({ repo: o.repository, digest: meta.origin.digest });
        }
      } catch {
        // an origin this shuru cannot parse: nothing to learn from it
      }
    }
    if (!meta.parent || !(await store.has(meta.parent).catch(() => false))) break;
    meta = decodeManifest(await store.readManifestBytes(meta.parent)).meta;
  }
  const discover = options.discoverTags ?? 16;
  if (discover > 0) {
    const others = (await client.listTags(repo, 1000)).filter((t) => t !== tag).sort();
    for (const t of others.slice(0, discover)) {
      const h = await client.headManifest(repo, t);
      if (h?.digest) candidates.push({ repo, digest: h.digest });
    }
  }
  const known = new Map<string, KnownChunk>();
  const learned = new Set<string>();
  for (const c of candidates) {
    if (learned.has(c.digest)) continue;
    learned.add(c.digest);
    try {
      await learnCandidate(client, cache, c, bs, known);
    } catch (err) {
      // Another kind of artifact under a tag, or an origin deleted since: nothing to reuse.
      note(`shuru: not reusing ${c.repo}@${c.digest.slice(0, 19)}: ${(err as Error).message}`);
    }
  }

  // 2. Reuse: assign known chunks to packs, biggest share first; drop mostly-dead packs.
  const perPack = new Map<string, { pack: Descriptor; repo: string; chunks: KnownChunk[] }>();
  for (const h of order) {
    const k = known.get(toHex(h));
    if (!k) continue;
    let p = perPack.get(k.pack.digest);
    if (!p) perPack.set(k.pack.digest, p = { pack: k.pack, repo: k.repo, chunks: [] });
    p.chunks.push(k);
  }
  const minLive = options.minLiveFraction ?? 0.25;
  const reused: { pack: Descriptor; chunks: KnownChunk[] }[] = [];
  let mountedPacks = 0;
  for (const p of [...perPack.values()].sort((a, b) => a.pack.digest < b.pack.digest ? -1 : 1)) {
    const live = p.chunks.reduce((n, k) => n + k.entry.length, 0);
    if (live < minLive * p.pack.size) continue;
    let ok = false;
    if (p.repo !== repo) {
      ok = await client.mountBlob(repo, p.pack.digest, p.repo);
      if (ok) mountedPacks++;
    }
    if (!ok) ok = (await client.headBlob(repo, p.pack.digest, "pull,push")) === p.pack.size;
    if (ok) reused.push({ pack: p.pack, chunks: p.chunks });
  }
  const reusedHex = new Set<string>();
  for (const r of reused) for (const k of r.chunks) reusedHex.add(toHex(k.entry.hash));
  const fresh = order.filter((h) => !reusedHex.has(toHex(h)));
  if (reused.length > 0) {
    note(
      `shuru: ${reusedHex.size} of ${order.length} chunks are in ${reused.length} packs the ` +
        "registry has; not sending them",
    );
  }

  // 3. New packs, built in block order and uploaded unless already there.
  const packBytes = options.packBytes ?? 16 * 1024 * 1024;
  const progress: TransferProgress = {
    phase: "upload",
    doneBytes: 0,
    totalBytes: fresh.length * bs,
    doneChunks: 0,
    totalChunks: fresh.length,
    wireBytes: 0,
  };
  options.onProgress?.({ ...progress });
  const packs: Descriptor[] = reused.map((r) => r.pack);
  const entries: ChunkEntry[] = [];
  for (const [i, r] of reused.entries()) {
    for (const k of r.chunks) entries.push({ ...k.entry, pack: i });
  }
  let resumedPacks = 0;
  let newPacks = 0;
  let bytesSent = 0;
  const inFlight = new Set<Promise<void>>();
  const failures: unknown[] = [];
  const sendPack = async (bytes: Uint8Array, chunks: number): Promise<Descriptor> => {
    const digest = await sha256Digest(bytes);
    const desc: Descriptor = { mediaType: MEDIA.pack, digest, size: bytes.length };
    const have = await client.headBlob(repo, digest, "pull,push");
    if (have === bytes.length) {
      resumedPacks++;
    } else {
      const before = progress.wireBytes;
      await client.uploadBlob(repo, digest, bytes, {
        onProgress: (sent) => {
          progress.wireBytes = before + sent;
          options.onProgress?.({ ...progress });
        },
      });
      progress.wireBytes = before + bytes.length;
      bytesSent += bytes.length;
    }
    progress.doneChunks += chunks;
    progress.doneBytes += chunks * bs;
    options.onProgress?.({ ...progress });
    return desc;
  };
  let parts: Uint8Array[] = [];
  let partEntries: ChunkEntry[] = [];
  let size = 0;
  const flush = async () => {
    if (partEntries.length === 0) return;
    const bytes = new Uint8Array(size);
    let off = 0;
    for (const p of parts) {
      bytes.set(p, off);
      off += p.length;
    }
    const index = packs.length;
    packs.push({ mediaType: MEDIA.pack, digest: "", size: bytes.length });
    for (const e of partEntries) entries.push({ ...e, pack: index });
    newPacks++;
    const count = partEntries.length;
    parts = [];
    partEntries = [];
    size = 0;
    while (inFlight.size >= (options.concurrency ?? 2)) await Promise.race(inFlight);
    if (failures.length > 0) return;
    const job = sendPack(bytes, count).then(
      (desc) => {
        packs[index] = desc;
      },
      (err) => {
        failures.push(err);
      },
    ).finally(() => inFlight.delete(job));
    inFlight.add(job);
  };
  for (const h of fresh) {
    if (failures.length > 0) break;
    const data = await store.chunks.read(h, bs);
    const stored = encodeChunk(data, { compress: options.compress ?? true });
    if (size > 0 && size + stored.bytes.length > packBytes) await flush();
    partEntries.push({
      hash: h,
      pack: -1,
      offset: size,
      length: stored.bytes.length,
      encoding: stored.encoding,
    });
    parts.push(stored.bytes);
    size += stored.bytes.length;
  }
  if (failures.length === 0) await flush();
  await Promise.all(inFlight);
  if (failures.length > 0) throw failures[0];

  // 4. The index, the .idx and the config, then the manifest (which moves the tag).
  const sendSmall = async (mediaType: string, bytes: Uint8Array): Promise<Descriptor> => {
    const digest = await sha256Digest(bytes);
    if ((await client.headBlob(repo, digest, "pull,push")) !== bytes.length) {
      await client.uploadBlob(repo, digest, bytes);
      bytesSent += bytes.length;
    }
    await cache.put(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const indexBytes = encodeChunkIndex(entries, packs.length);
  const memorySize = manifest.memory?.table.diskSize;
  const config: CheckpointConfig = {
    // A memory checkpoint is format 2, so a reader that knows only disks refuses it.
    formatVersion: memorySize !== undefined ? 2 : 1,
    blockSize: bs,
    diskSize: table.diskSize,
    usedBlocks: manifest.header.usedCount,
    chunks: order.length,
    hash: "blake3-256",
    ...(manifest.meta.createdAt !== undefined ? { createdAt: manifest.meta.createdAt } : {}),
    ...(manifest.meta.parent !== undefined ? { parent: manifest.meta.parent } : {}),
    // Manifests from before arm64 guests record no architecture: theirs is x86_64.
    arch: manifest.meta.arch ?? "x86_64",
    ...(manifest.meta.image !== undefined ? { image: manifest.meta.image.ref } : {}),
    ...(memorySize !== undefined ? { memorySize } : {}),
  };
  const artifact = {
    config: await sendSmall(MEDIA.config, new TextEncoder().encode(JSON.stringify(config))),
    idx: await sendSmall(MEDIA.idx, idxBytes),
    chunks: await sendSmall(MEDIA.chunks, indexBytes),
    packs,
  };
  const manifestBytes = buildArtifact(artifact, {
    "org.opencontainers.image.title": name,
    ...(manifest.meta.createdAt !== undefined
      ? { "org.opencontainers.image.created": new Date(manifest.meta.createdAt).toISOString() }
      : {}),
  });
  const digest = await client.putManifest(
    repo,
    tag,
    manifestBytes,
    "application/vnd.oci.image.manifest.v1+json",
  );
  await cache.put(digest, manifestBytes);
  return {
    name,
    ref: text,
    digest,
    chunks: order.length,
    reusedChunks: reusedHex.size,
    newChunks: fresh.length,
    packs: packs.length,
    newPacks,
    resumedPacks,
    mountedPacks,
    bytesSent,
    newChunkBytes: fresh.length * bs,
    elapsedMs: performance.now() - t0,
  };
}
