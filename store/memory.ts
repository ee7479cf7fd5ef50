/**
 * Memory images: a guest's RAM as a table of chunks, exactly like a disk (same block size, the
 * same BLAKE3 chunk names, zero blocks not stored), so two images of similar guests share most
 * of their chunks, and gc treats them like disk chunks.
 *
 * - {@linkcode buildMemoryTable} hashes an image from a RAM file (reading only its data ranges,
 *   or copying hashes from the file's known table) plus the blocks a capture replaced.
 * - {@linkcode materializeMemory} writes a RAM file back from the chunks, verifying every
 *   chunk's hash, before any guest maps it; the file is cached (read-only) under
 *   `memory/<image id>.ram` and reused while its identity (size, mtime, ctime, inode) holds.
 *
 * @module
 */

import { join } from "node:path";
import * as fs from "node:fs";
import { libc } from "../ffi/mod.ts";
import { BlockTable } from "./manifest.ts";
import type { ChunkBatch, ChunkStore } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { blake3, isZero, toHex } from "./hash.ts";
import { PositionalFile } from "./file_io.ts";

/** Where the bytes of a memory image come from (see `vm/guest_ram.ts` for captures). */
export interface MemorySource {
  /** Guest memory size in bytes (a multiple of 4096). */
  size: number;
  /** The RAM file: the image's bytes for every block not in `capture`. */
  file: string;
  /**
   * The block table of `file` when known (it was materialized from the store): its hashes are
   * copied for blocks not in `capture` instead of reading the file.
   */
  fileTable?: BlockTable;
  /** Blocks whose bytes are in a capture file (at their own offsets) rather than in `file`. */
  capture?: { path: string; blocks: Uint8Array };
  /**
   * `file` will not change any more: keep it as the image's cached RAM file (hard link) so the
   * first restore needs no materializing. Only when every block comes from `file`.
   */
  adoptFile?: boolean;
}

/** What {@linkcode buildMemoryTable} did. */
export interface MemoryBuild {
  /** The image's table. */
  table: BlockTable;
  /** Blocks read and hashed. */
  hashedBlocks: number;
  /** Milliseconds spent hashing. */
  hashMs: number;
}

/** The content identity of a memory image (names its cached RAM file). */
export function memoryImageId(table: BlockTable): string {
  const geometry = new TextEncoder().encode(`memory:${table.blockSize}:${table.diskSize}:`);
  return toHex(blake3(geometry, table.hashes));
}

/** Blocks (of `bs`) that hold data according to `ranges` (`[start, end)` byte pairs). */
function blocksWithData(ranges: [number, number][], bs: number, count: number): Uint8Array {
  const out = new Uint8Array(count);
  for (const [start, end] of ranges) {
    const last = Math.min(count - 1, Math.floor((end - 1) / bs));
    for (let b = Math.floor(start / bs); b <= last; b++) out[b] = 1;
  }
  return out;
}

/**
 * Builds the block table of the image described by `source` in blocks of `blockSize`, adding
 * new chunks to `batch` (the caller finishes or aborts it).
 */
export async function buildMemoryTable(
  source: MemorySource,
  into: { blockSize: number; batch: ChunkBatch },
): Promise<MemoryBuild> {
  const { blockSize, batch } = into;
  const table = new BlockTable(blockSize, source.size);
  const count = table.entryCount;
  const bs = blockSize;
  const capture = source.capture;
  if (capture && capture.blocks.length !== count) {
    throw new StoreError("invalid_argument", "Cannot save memory: the capture has another size");
  }
  // Which blocks must be read from `file`: none when its table is known; else its data ranges.
  let fromFile: Uint8Array;
  if (source.fileTable) {
    const ft = source.fileTable;
    if (ft.blockSize !== bs || ft.diskSize !== source.size) {
      throw new StoreError("invalid_argument", "Cannot save memory: the file's table differs");
    }
    table.hashes.set(ft.hashes);
    fromFile = new Uint8Array(count);
  } else {
    const size = (await Deno.stat(source.file)).size;
    if (size !== source.size) {
      throw new StoreError(
        "invalid_argument",
        `Cannot save memory: ${source.file} is ${size} bytes, the guest has ${source.size}`,
      );
    }
    fromFile = blocksWithData(libc.dataRanges(source.file), bs, count);
  }
  let hashedBlocks = 0;
  let hashMs = 0;
  const files: Record<"file" | "capture", PositionalFile | undefined> = {
    file: undefined,
    capture: undefined,
  };
  try {
    files.file = await PositionalFile.open(source.file, "r");
    if (capture) files.capture = await PositionalFile.open(capture.path, "r");
    // Runs of consecutive blocks from the same file, read with one read of up to 4 MiB.
    const maxRun = Math.max(1, Math.floor(4 * 1024 * 1024 / bs));
    const buf = new Uint8Array(maxRun * bs);
    let b = 0;
    while (b < count) {
      const where = capture?.blocks[b] ? "capture" : fromFile[b] ? "file" : undefined;
      if (!where) {
        b++;
        continue;
      }
      let run = 1;
      while (
        run < maxRun && b + run < count &&
        (capture?.blocks[b + run] ? "capture" : fromFile[b + run] ? "file" : undefined) === where
      ) run++;
      const len = Math.min(run * bs, source.size - b * bs);
      const part = buf.subarray(0, run * bs);
      const got = await files[where]!.read(part.subarray(0, len), b * bs);
      part.fill(0, got);
      for (let k = 0; k < run; k++) {
        const block = part.subarray(k * bs, (k + 1) * bs);
        if (isZero(block)) {
          table.set(b + k, null);
          continue;
        }
        const t0 = performance.now();
        const h = blake3(block);
        hashMs += performance.now() - t0;
        hashedBlocks++;
        table.set(b + k, h);
        await batch.add(h, block);
      }
      b += run;
    }
  } finally {
    files.file?.close();
    files.capture?.close();
  }
  return { table, hashedBlocks, hashMs };
}

/** The identity of a cached RAM file, valid while these match. */
interface CacheKey {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

function keyOf(st: Deno.FileInfo): CacheKey {
  return {
    size: st.size,
    mtimeMs: st.mtime?.getTime() ?? 0,
    ctimeMs: st.ctime?.getTime() ?? 0,
    ino: st.ino ?? 0,
  };
}

function sameKey(a: CacheKey, b: CacheKey): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs &&
    a.ino === b.ino;
}

/** Paths of the cached RAM file of image `id` and its identity record. */
export function cachePaths(memoryDir: string, id: string): { ram: string; key: string } {
  return { ram: join(memoryDir, `${id}.ram`), key: join(memoryDir, `${id}.json`) };
}

/** The cached RAM file of image `id` when it is still the one written (else `undefined`). */
export async function cachedRamFile(
  memoryDir: string,
  image: { id: string; size: number },
): Promise<string | undefined> {
  const { id, size } = image;
  const paths = cachePaths(memoryDir, id);
  try {
    const recorded = JSON.parse(await Deno.readTextFile(paths.key)) as CacheKey;
    const now = keyOf(await Deno.stat(paths.ram));
    if (now.size === size && sameKey(recorded, now)) return paths.ram;
  } catch {
    // Missing or unreadable: not cached.
  }
  return undefined;
}

/** Records `ram` (complete, read-only) as the cached file of image `id`. */
export async function recordCache(
  memoryDir: string,
  image: { id: string; ram: string },
): Promise<void> {
  const { id, ram } = image;
  const paths = cachePaths(memoryDir, id);
  const tmp = `${paths.key}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(keyOf(await Deno.stat(ram))));
  await Deno.rename(tmp, paths.key);
}

/** Options of {@linkcode materializeMemory}. */
export interface MaterializeOptions {
  /** Where cached RAM files live (the store's `memory/`). */
  memoryDir: string;
  /** Folder for the temporary file (the store's `tmp/`, same file system as `memoryDir`). */
  tmpDir: string;
  /** For messages: which checkpoint the image belongs to. */
  name: string;
}

/**
 * Writes the RAM file of image `table` into `options.memoryDir` from the chunks, verifying each
 * chunk's length and hash as it is read; zero blocks stay holes. Returns its path.
 *
 * @throws {StoreError} `corrupt_chunk` naming the block and checkpoint when a chunk is missing,
 *   short or does not match its hash; nothing is left behind then.
 */
export async function materializeMemory(
  chunks: ChunkStore,
  table: BlockTable,
  options: MaterializeOptions,
): Promise<string> {
  const { memoryDir } = options;
  const id = memoryImageId(table);
  const paths = cachePaths(memoryDir, id);
  const tmp = join(options.tmpDir, `${id}.${crypto.randomUUID().slice(0, 8)}.ram`);
  const bs = table.blockSize;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.ftruncateSync(fd, table.diskSize);
    for (let b = 0; b < table.entryCount; b++) {
      const hash = table.get(b);
      if (!hash) continue;
      let data: Uint8Array;
      try {
        data = await chunks.read(hash, bs);
      } catch (err) {
        if (err instanceof StoreError && err.code === "corrupt_chunk") {
          throw new StoreError(
            "corrupt_chunk",
            `Cannot restore the memory of checkpoint "${options.name}": block ${b} of its RAM ` +
              `image is damaged (${err.message}); the image cannot be used`,
            { cause: err },
          );
        }
        throw err;
      }
      const len = Math.min(bs, table.diskSize - b * bs);
      let off = 0;
      while (off < len) off += fs.writeSync(fd, data, off, len - off, b * bs + off);
    }
    fs.fsyncSync(fd);
    fs.fchmodSync(fd, 0o444);
  } catch (err) {
    fs.closeSync(fd);
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  fs.closeSync(fd);
  await Deno.mkdir(memoryDir, { recursive: true });
  await Deno.rename(tmp, paths.ram);
  await recordCache(memoryDir, { id, ram: paths.ram });
  return paths.ram;
}
