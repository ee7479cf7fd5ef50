/**
 * The byte-stream helpers of the handshake and transmission phases: io's buffered reader, whose
 * reads that end part-way are {@linkcode NbdProtocolError} `SHORT_READ`, and `writeAll`.
 *
 * Internal module (leading underscore): not part of `nbd/mod.ts`.
 *
 * @module
 */

import { BufferedReader, type ByteSource } from "../io/mod.ts";
import { NbdProtocolError } from "./errors.ts";

export { type BufferedReader, type ByteSink, type ByteSource, writeAll } from "../io/mod.ts";

/** A reader over `src` whose short reads are `SHORT_READ` protocol errors. */
export function nbdReader(src: ByteSource, bufferSize?: number): BufferedReader {
  return new BufferedReader(src, {
    ...(bufferSize !== undefined ? { bufferSize } : {}),
    shortRead: (message) => new NbdProtocolError("SHORT_READ", message),
  });
}
