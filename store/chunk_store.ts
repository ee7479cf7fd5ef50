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

import { dirname, join } from "node:path";
import { blake3, HASH_LEN, hashFromHex, toHex } from "./hash.ts";
import { StoreError } from "./errors.ts";

/** Store folders: the owner only (checkpoints hold whatever a guest wrote to its disk). */
export const STORE_DIR_MODE = 0o700;
/** Chunk, manifest and lock files: the owner only. */
export const STORE_FILE_MODE = 0o600;

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
  #shardsTouched = new Set<string>();

  /**
   * Opens the chunk files of a store (creates nothing; see {@linkcode ChunkStore.init}).
   *
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

  /** Creates `chunks/00..ff` and `tmp/` once, so writes never need a mkdir. */
  async init(): Promise<void> {
    await Deno.mkdir(this.tmpDir, { recursive: true, mode: STORE_DIR_MODE });
    if (existsSync(join(this.dir, "ff"))) return; // created by an earlier open
    for (let i = 0; i < 256; i++) {
      await Deno.mkdir(join(this.dir, i.toString(16).padStart(2, "0")), {
        recursive: true,
        mode: STORE_DIR_MODE,
      });
    }
  }

  /** `true` when the chunk exists (its content is checked on read, not here). */
  has(hash: Uint8Array): Promise<boolean> {
    return Promise.resolve(this.#exists(this.pathOf(hash)));
  }

  // Metadata calls on the dentry cache take microseconds; their synchronous forms skip the
  // thread-pool round trip that dominated saves when done asynchronously (measured).
  #exists(path: string): boolean {
    return existsSync(path);
  }

  /**
   * Stores `data` as chunk `hash` unless it exists. Returns `true` when a new file was written.
   * The caller computed `hash` from `data`.
   */
  async put(hash: Uint8Array, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    const hex = toHex(hash);
    const shard = join(this.dir, hex.slice(0, 2));
    const final = join(shard, hex.slice(2));
    if (this.#exists(final)) return false;
    const tmp = join(this.tmpDir, `${hex}.${crypto.randomUUID()}.chunk`);
    try {
      const file = Deno.openSync(tmp, { write: true, createNew: true, mode: STORE_FILE_MODE });
      try {
        let off = 0;
        while (off < data.length) off += file.writeSync(data.subarray(off));
        if (options.sync !== false) await file.syncData();
      } finally {
        file.close();
      }
      Deno.renameSync(tmp, final);
    } catch (err) {
      try {
        Deno.removeSync(tmp);
      } catch {
        // never created, or already renamed
      }
      throw err;
    }
    this.#shardsTouched.add(shard);
    return true;
  }

  /** Records that `shard` got a new entry (made durable by {@linkcode ChunkStore.syncDirs}). */
  touched(shard: string): void {
    this.#shardsTouched.add(shard);
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
        const st = Deno.lstatSync(join(shardDir, entry.name));
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

/** Options of {@linkcode ChunkBatch}. */
export interface ChunkBatchOptions {
  /** Chunks written before the batch is made durable and renamed (default 256). */
  maxPending?: number;
  /** fdatasync chunks before renaming them into place (default `true`). */
  sync?: boolean;
}

interface PendingChunk {
  file: Deno.FsFile;
  tmp: string;
  final: string;
}

/**
 * Writes many new chunks with few journal commits: each chunk goes to `tmp/`, then a group of
 * them is fdatasync'ed together (many in flight, so the file system can fold them into few
 * commits), then renamed into place.
 */
export class ChunkBatch {
  /** New chunk files written so far. */
  written = 0;
  /** Milliseconds spent creating and writing chunk files. */
  writeMs = 0;
  /** Milliseconds spent making them durable (fdatasync, renames, folder fsyncs). */
  syncMs = 0;
  #store: ChunkStore;
  #pending: PendingChunk[] = [];
  #seen = new Set<string>();
  #maxPending: number;
  #sync: boolean;

  /**
   * @param store Where the chunks go.
   * @param options Batch size and durability.
   */
  constructor(store: ChunkStore, options: ChunkBatchOptions = {}) {
    this.#store = store;
    this.#maxPending = options.maxPending ?? 256;
    this.#sync = options.sync ?? true;
  }

  /** Adds chunk `hash` with `data` unless the store or this batch has it; `true` if new. */
  async add(hash: Uint8Array, data: Uint8Array): Promise<boolean> {
    const hex = toHex(hash);
    if (this.#seen.has(hex)) return false;
    this.#seen.add(hex);
    const final = join(this.#store.dir, hex.slice(0, 2), hex.slice(2));
    if (existsSync(final)) return false;
    const t0 = performance.now();
    const tmp = join(this.#store.tmpDir, `${hex}.${crypto.randomUUID()}.chunk`);
    const file = Deno.openSync(tmp, { write: true, createNew: true, mode: STORE_FILE_MODE });
    this.#pending.push({ file, tmp, final });
    let off = 0;
    while (off < data.length) off += file.writeSync(data.subarray(off));
    this.written++;
    this.writeMs += performance.now() - t0;
    if (this.#pending.length >= this.#maxPending) await this.flush();
    return true;
  }

  /** Makes the pending chunks durable and renames them into place. */
  async flush(): Promise<void> {
    const batch = this.#pending;
    this.#pending = [];
    const t0 = performance.now();
    try {
      if (this.#sync) await forEachLimit(batch, 32, (c) => c.file.syncData());
    } finally {
      for (const c of batch) c.file.close();
    }
    for (const c of batch) {
      Deno.renameSync(c.tmp, c.final);
      this.#store.touched(dirname(c.final));
    }
    this.syncMs += performance.now() - t0;
  }

  /** Flushes and makes the renames durable (fsyncs the touched shard folders). */
  async finish(): Promise<void> {
    await this.flush();
    const t0 = performance.now();
    await this.#store.syncDirs();
    this.syncMs += performance.now() - t0;
  }

  /** Closes and removes pending files after a failure. */
  abort(): void {
    for (const c of this.#pending) {
      try {
        c.file.close();
      } catch {
        // already closed
      }
      try {
        Deno.removeSync(c.tmp);
      } catch {
        // gone
      }
    }
    this.#pending = [];
  }
}

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
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
