/**
 * Disk deltas: the blocks a device changed over its lower layer, as a plain file of their bytes
 * plus a list of runs, outside the chunk store. A ready snapshot (a guest booted to a ready
 * agent, its RAM and device state saved) keeps its disk this way: the boot's writes (the ext4
 * mount, the filesystem grown to the disk size, a few files) are a few MiB over a base image the
 * assets already hold, so no chunk of the base is hashed or copied into a store, and one delta
 * serves every data home that shares the assets.
 *
 * {@linkcode exportDelta} writes the delta of a frozen device state; {@linkcode applyDelta}
 * verifies a delta's bytes (BLAKE3) and writes them into a new device over the same lower layer
 * before any guest reads it.
 *
 * @module
 */

import { StoreError } from "./errors.ts";
import { blake3, toHex } from "./hash.ts";

/** Version of the delta description. */
export const DELTA_FORMAT = 1;

/** A run of blocks: `[first, count, kind]`; "data" runs' bytes follow each other in the file. */
export type DeltaRun = [number, number, "data" | "zero"];

/** A disk delta's description (JSON beside its data file). */
export interface DiskDelta {
  /** {@linkcode DELTA_FORMAT}. */
  format: number;
  /** Block size of the device. */
  blockSize: number;
  /** Device size in bytes. */
  size: number;
  /** Changed blocks in order. */
  runs: DeltaRun[];
  /** Bytes in the data file. */
  dataBytes: number;
  /** BLAKE3 of the data file (hex). */
  dataHash: string;
}

/** A frozen device state as a delta sees it (the device provides it). */
export interface DeltaSource {
  /** Block size. */
  blockSize: number;
  /** Device size in bytes. */
  size: number;
  /** Where each block lives (a block map). */
  where: Uint16Array;
  /** The map value of blocks that read from the lower layer. */
  lower: number;
  /** The map value of blocks that read as zeros. */
  zero: number;
  /** Reads `count` blocks from `first`, all in one place. */
  readRun(first: number, count: number): Promise<Uint8Array>;
}

/**
 * Writes the blocks of `source` that are not the lower layer's to `dataPath` and returns their
 * description.
 */
export async function exportDelta(source: DeltaSource, dataPath: string): Promise<DiskDelta> {
  const bs = source.blockSize;
  const runs: DeltaRun[] = [];
  const parts: Uint8Array[] = [];
  let dataBytes = 0;
  const where = source.where;
  const count = where.length;
  let i = 0;
  while (i < count) {
    const w = where[i]!;
    if (w === source.lower) {
      i++;
      continue;
    }
    let end = i + 1;
    // One run per place (one overlay layer, or zeros), at most 4 MiB.
    while (end < count && where[end] === w && (end - i) * bs < 4 * 1024 * 1024) end++;
    if (w === source.zero) {
      runs.push([i, end - i, "zero"]);
    } else {
      const bytes = await source.readRun(i, end - i);
      // The last block may run past the device's end; keep only the device's bytes.
      const len = Math.min(bytes.length, source.size - i * bs);
      parts.push(bytes.subarray(0, len));
      dataBytes += len;
      runs.push([i, end - i, "data"]);
    }
    i = end;
  }
  const data = new Uint8Array(dataBytes);
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  await Deno.writeFile(dataPath, data, { mode: 0o600 });
  return {
    format: DELTA_FORMAT,
    blockSize: bs,
    size: source.size,
    runs,
    dataBytes,
    dataHash: toHex(blake3(data)),
  };
}

/**
 * Writes `delta` (its bytes from `dataPath`, verified first) into `device`, which must be a
 * fresh device of the same size and block size over the same lower layer.
 *
 * @throws {StoreError} `corrupt_chunk` when the data file is missing, short or altered;
 *   `invalid_argument` when the device does not match.
 */
export async function applyDelta(
  device: {
    blockSize: number;
    size: number;
    write(offset: number, data: Uint8Array): Promise<void>;
    writeZeroes(offset: number, length: number): Promise<void>;
  },
  delta: DiskDelta,
  dataPath: string,
): Promise<void> {
  if (delta.format !== DELTA_FORMAT) {
    throw new StoreError("invalid_argument", `Cannot apply a disk delta of format ${delta.format}`);
  }
  if (delta.blockSize !== device.blockSize || delta.size !== device.size) {
    throw new StoreError(
      "invalid_argument",
      `Cannot apply a disk delta of ${delta.size} bytes in ${delta.blockSize}-byte blocks to a ` +
        `device of ${device.size} in ${device.blockSize}`,
    );
  }
  let data: Uint8Array;
  try {
    data = await Deno.readFile(dataPath);
  } catch (err) {
    throw new StoreError("corrupt_chunk", `Cannot read disk delta ${dataPath}: ${err}`, {
      cause: err,
    });
  }
  if (data.length !== delta.dataBytes || toHex(blake3(data)) !== delta.dataHash) {
    throw new StoreError(
      "corrupt_chunk",
      `Cannot apply disk delta ${dataPath}: its bytes do not match their hash (damaged)`,
    );
  }
  const bs = delta.blockSize;
  let off = 0;
  for (const [first, count, kind] of delta.runs) {
    const start = first * bs;
    const len = Math.min(count * bs, device.size - start);
    if (kind === "zero") {
      await device.writeZeroes(start, len);
    } else {
      await device.write(start, data.subarray(off, off + len));
      off += len;
    }
  }
}
