/**
 * Bytes: joining byte arrays, and writing all of a buffer to a sink that may take only part of
 * it per call.
 *
 * @module
 */

/** Anything we can read bytes from (a `Deno.Conn`, or an in-memory pipe in tests). */
export interface ByteSource {
  /** Reads up to `p.length` bytes into `p`; `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything we can write bytes to. */
export interface ByteSink {
  /** Writes some prefix of `p`; returns how many bytes were written. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * Joins byte arrays into a new one (always a copy, so the parts may be reused after).
 *
 * @example
 * ```ts
 * import { concatBytes } from "./bytes.ts";
 * const joined = concatBytes([new Uint8Array([1, 2]), new Uint8Array([3])]);
 * if (joined.join() !== "1,2,3") throw new Error(joined.join());
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Writes every byte of `data` (a sink may accept only part of it per call). */
export async function writeAll(sink: ByteSink, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    done += await sink.write(done === 0 ? data : data.subarray(done));
  }
}

/** Writes `data` (bytes, text as UTF-8, or a stream of bytes) to `writable`, then closes it. */
export async function writeAndClose(
  data: Uint8Array | string | ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
): Promise<void> {
  if (data instanceof ReadableStream) {
    await data.pipeTo(writable);
    return;
  }
  const w = writable.getWriter();
  await w.write(typeof data === "string" ? new TextEncoder().encode(data) : data);
  await w.close();
}

/** Reads a whole stream into one buffer (a stream of one chunk gives that chunk). */
export async function readAll(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of readable) parts.push(c);
  return parts.length === 1 ? parts[0]! : concatBytes(parts);
}
