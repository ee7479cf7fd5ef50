/**
 * Helpers for the store's tests: temp folders and deterministic pseudo-random bytes.
 *
 * @module
 */

/** Deterministic bytes (xorshift32) so failures reproduce. */
export function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A temp folder removed on dispose. */
export async function tempDir(prefix: string): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes a base image: `blocks` pseudo-random 64 KiB blocks with every 4th block zero. */
export async function writeBase(path: string, blocks: number, seed: number): Promise<Uint8Array> {
  const bs = 65536;
  const data = pseudoRandom(blocks * bs, seed);
  for (let b = 0; b < blocks; b += 4) data.fill(0, b * bs, (b + 1) * bs);
  await Deno.writeFile(path, data);
  return data;
}
