/**
 * Block hashing (BLAKE3-256 via hash-wasm) and the helpers around hashes.
 *
 * One hasher instance is reused for every call: `init`, `update` and `digest` run
 * synchronously with no `await` between them, so calls from concurrent async tasks cannot
 * interleave on it.
 *
 * @module
 */

import { createBLAKE3, type IHasher } from "hash-wasm";

/** Length of a chunk hash in bytes. */
export const HASH_LEN = 32;

let hasher: IHasher | undefined;

/** Loads the hasher once; later calls return at once. */
export async function initHasher(): Promise<void> {
  if (!hasher) hasher = await createBLAKE3(256);
}

/** Returns the BLAKE3-256 of `parts` concatenated. Call {@linkcode initHasher} first. */
export function blake3(...parts: Uint8Array[]): Uint8Array {
  const h = hasher;
  if (!h) throw new Error("Cannot hash: initHasher() was not awaited");
  h.init();
  for (const p of parts) h.update(p);
  return h.digest("binary");
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += HEX[b];
  return s;
}

/** Parses lower-case hex of exactly `HASH_LEN` bytes; returns `null` when malformed. */
export function hashFromHex(hex: string): Uint8Array | null {
  if (hex.length !== HASH_LEN * 2 || !/^[0-9a-f]+$/.test(hex)) return null;
  const out = new Uint8Array(HASH_LEN);
  for (let i = 0; i < HASH_LEN; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** `true` when every byte of `data` is zero. */
export function isZero(data: Uint8Array): boolean {
  let i = 0;
  const n = data.length;
  // Compare 32-bit words where the buffer is aligned (the common case for block buffers).
  if ((data.byteOffset & 3) === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, n >>> 2);
    for (let w = 0; w < words.length; w += 8) {
      if (
        (words[w]! | words[w + 1]! | words[w + 2]! | words[w + 3]! | words[w + 4]! |
          words[w + 5]! | words[w + 6]! | words[w + 7]!) !== 0
      ) {
        // Past the end, `undefined | 0` is 0, so a non-zero result is a real non-zero word.
        return false;
      }
    }
    i = words.length * 4;
  }
  for (; i < n; i++) if (data[i] !== 0) return false;
  return true;
}

/** `true` when the 32-byte hash at `table[offset..]` is all zeros (the "zero block" entry). */
export function isZeroEntry(table: Uint8Array, offset: number): boolean {
  for (let i = 0; i < HASH_LEN; i++) if (table[offset + i] !== 0) return false;
  return true;
}
