/**
 * Where a checkpoint's lower layer gets its chunks: the local {@linkcode ChunkStore} (which
 * implements this), or a remote source that fetches missing chunks from a registry on first
 * read and keeps them in the local store (`remote_source.ts`).
 *
 * @module
 */

/** A source of verified chunks. */
export interface ChunkSource {
  /**
   * Returns chunk `hash` (exactly `expectedLength` bytes), verified against its hash.
   * @throws {StoreError} `corrupt_chunk` when missing or wrong; `unavailable` when a remote
   * source could not fetch it.
   */
  read(hash: Uint8Array, expectedLength: number): Promise<Uint8Array>;
  /**
   * Makes sure the chunks are in the local store (a remote source fetches the missing ones), so
   * a checkpoint saved over them is complete on its own. Absent: they always are.
   */
  ensureLocal?(hashes: readonly Uint8Array[], expectedLength: number): Promise<void>;
  /** Releases what the source holds (connections, in-flight fetches). */
  close?(): void;
}
