/**
 * The chunk store: one file per distinct non-zero block, named by its BLAKE3-256 hash and
 * sharded by the first byte (`chunks/ab/cdef...`, 256 folders).
 *
 * A chunk is written to `tmp/` first, made durable (fdatasync), then renamed into place, so a
 * chunk file that exists under its final name is complete. Reads verify the bytes against the
 * name: a mismatch or short file is a `corrupt_chunk` error, never wrong data.
 *
 * @module
 */

import { join } from "node:path";
import { blake3, HASH_LEN, hashFromHex, toHex } from "./hash.ts";
import { StoreError } from "./errors.ts";

/** Options of {@linkcode ChunkStore.put}. */
export interface PutOptions {
  /** Make the chunk durable before renaming it into place (default `true`). */
  sync?: boolean;
}

/** Content-addressed chunk files under `<root>/chunks`. */
export class ChunkStore {
  /** The `chunks/` folder. */
  readonly dir: string;
  /** The folder for temporary files (same file system, for atomic renames). */
  readonly tmpDir: string;
  #shardsMade = new Set<string>();
  #shardsTouched = new Set<string>();

  /**
   * @param root The store folder (holds `chunks/` and `tmp/`).
   */
  constructor(root: string) {
    this.dir = join(root, "chunks");
    this.tmpDir = join(root, "tmp");
  }

  /** Path of the chunk named `hash`. */
  pathOf(hash: Uint8Array): string {
    const hex = toHex(hash);
    return join(this.dir, hex.slice(0, 2), hex.slice(2));
  }

  /** `true` when the chunk exists (its content is checked on read, not here). */
  async has(hash: Uint8Array): Promise<boolean> {
    try {
      await Deno.lstat(this.pathOf(hash));
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  /**
   * Stores `data` as chunk `hash` unless it exists. Returns `true` when a new file was written.
   * The caller computed `hash` from `data`.
   */
  async put(hash: Uint8Array, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    if (await this.has(hash)) return false;
    const hex = toHex(hash);
    const shard = join(this.dir, hex.slice(0, 2));
    if (!this.#shardsMade.has(shard)) {
      await Deno.mkdir(shard, { recursive: true });
      this.#shardsMade.add(shard);
    }
    await Deno.mkdir(this.tmpDir, { recursive: true });
    const tmp = join(this.tmpDir, `${hex}.${crypto.randomUUID()}.chunk`);
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true });
      try {
        let off = 0;
        while (off < data.length) off += await file.write(data.subarray(off));
        if (options.sync !== false) await file.syncData();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, join(shard, hex.slice(2)));
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
    this.#shardsTouched.add(shard);
    return true;
  }

  /** Makes the renames of chunks written since the last call durable (fsyncs their folders). */
  async syncDirs(): Promise<void> {
    const dirs = [...this.#shardsTouched];
    this.#shardsTouched.clear();
    if (dirs.length > 0) dirs.push(this.dir);
    await Promise.all(dirs.map(fsyncDir));
  }

  /**
   * Reads chunk `hash` and verifies it. `expectedLength` is the block size.
   * @throws {StoreError} `corrupt_chunk` when missing, short, long or not matching its hash.
   */
  async read(hash: Uint8Array, expectedLength: number): Promise<Uint8Array> {
    const path = this.pathOf(hash);
    let data: Uint8Array;
    try {
      data = await Deno.readFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new StoreError("corrupt_chunk", `Cannot read chunk ${toHex(hash)}: file is missing`, {
          cause: err,
        });
      }
      throw err;
    }
    if (data.length !== expectedLength) {
      throw new StoreError(
        "corrupt_chunk",
        `Cannot read chunk ${toHex(hash)}: ${data.length} bytes, expected ${expectedLength}`,
      );
    }
    const actual = blake3(data);
    for (let i = 0; i < HASH_LEN; i++) {
      if (actual[i] !== hash[i]) {
        throw new StoreError(
          "corrupt_chunk",
          `Cannot read chunk ${toHex(hash)}: content hashes to ${toHex(actual)}`,
        );
      }
    }
    return data;
  }

  /** Lists every chunk as `[hash hex, size in bytes]`; ignores stray files. */
  async *list(): AsyncGenerator<[string, number]> {
    let shards: Deno.DirEntry[];
    try {
      shards = await Array.fromAsync(Deno.readDir(this.dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const shard of shards) {
      if (!shard.isDirectory || !/^[0-9a-f]{2}$/.test(shard.name)) continue;
      const shardDir = join(this.dir, shard.name);
      for await (const entry of Deno.readDir(shardDir)) {
        const hex = shard.name + entry.name;
        if (!entry.isFile || hashFromHex(hex) === null) continue;
        const st = await Deno.lstat(join(shardDir, entry.name));
        yield [hex, st.size];
      }
    }
  }

  /** Removes the chunk with hex name `hex`; missing is fine. */
  async removeHex(hex: string): Promise<void> {
    await Deno.remove(join(this.dir, hex.slice(0, 2), hex.slice(2))).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
}

/** fsyncs a folder so renames into it survive a power loss. */
export async function fsyncDir(path: string): Promise<void> {
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
export async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const it = items[Symbol.iterator]();
  const worker = async () => {
    for (let next = it.next(); !next.done; next = it.next()) await fn(next.value);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}
