/**
 * Streaming decoders for the response content codings the relay scrubs through (gzip, deflate,
 * br), on `node:zlib`, with backpressure: a write waits while decoded output is not consumed,
 * so a small compressed body that inflates to gigabytes (a "zip bomb") never sits in memory;
 * it flows out in {@linkcode DECODE_CHUNK_BYTES} pieces as fast as the guest reads.
 *
 * `deflate` is ambiguous in practice: RFC 9110 says zlib-wrapped (RFC 1950), some servers send
 * raw deflate (RFC 1951). The decoder looks at the first two bytes to tell them apart.
 *
 * @module
 */

import zlib from "node:zlib";
import type { Transform } from "node:stream";
import { DECODABLE_CODINGS, DECODE_CHUNK_BYTES } from "../http/mod.ts";

/** A content coding the relay decodes. */
export type ContentCoding = "gzip" | "deflate" | "br";

/**
 * What a Content-Encoding value asks for: `identity` (absent, empty or identity), one decodable
 * coding, or `unsupported` (any other coding, or several stacked).
 */
export function contentCodingOf(
  value: string | undefined,
): ContentCoding | "identity" | "unsupported" {
  const codings = (value ?? "").split(",").map((c) => c.trim().toLowerCase())
    .filter((c) => c.length > 0 && c !== "identity");
  if (codings.length === 0) return "identity";
  if (codings.length > 1 || !DECODABLE_CODINGS.includes(codings[0]!)) return "unsupported";
  const coding = codings[0]!;
  return coding === "x-gzip" ? "gzip" : coding as ContentCoding;
}

/** True when two bytes start a zlib stream (RFC 1950: CM = 8 and the header checksum). */
function isZlibHeader(b0: number, b1: number): boolean {
  return (b0 & 0x0f) === 8 && ((b0 << 8) | b1) % 31 === 0;
}

/**
 * One streaming decoder: {@linkcode write} compressed bytes (awaiting each), {@linkcode end},
 * and iterate {@linkcode output} concurrently.
 */
export class ContentDecoder {
  readonly #coding: ContentCoding;
  #stream: Transform | null = null;
  #head = new Uint8Array(0);
  readonly #ready = Promise.withResolvers<Transform>();
  #error: Error | null = null;

  /** Builds a decoder for `coding`. */
  constructor(coding: ContentCoding) {
    this.#coding = coding;
    // destroy() before the first write rejects #ready; output() may never be awaited.
    this.#ready.promise.catch(() => {});
    if (coding !== "deflate") {
      this.#start(coding === "gzip" ? zlib.createGunzip(this.#options()) : this.#brotli());
    }
  }

  #options(): zlib.ZlibOptions {
    return { chunkSize: DECODE_CHUNK_BYTES };
  }

  #brotli(): Transform {
    return zlib.createBrotliDecompress({ chunkSize: DECODE_CHUNK_BYTES });
  }

  #start(stream: Transform): void {
    this.#stream = stream;
    stream.on("error", (e: Error) => this.#error ??= e);
    this.#ready.resolve(stream);
  }

  /**
   * Feeds compressed bytes; resolves once the decoder can take more. The bytes are copied.
   *
   * @throws {Error} The decoder's error if the data is corrupt.
   */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.#error !== null) throw this.#error;
    if (chunk.length === 0) return;
    let data = chunk.slice();
    if (this.#stream === null) {
      // deflate: wait for two bytes to tell zlib-wrapped from raw.
      const head = new Uint8Array(this.#head.length + data.length);
      head.set(this.#head);
      head.set(data, this.#head.length);
      if (head.length < 2) {
        this.#head = head;
        return;
      }
      this.#head = new Uint8Array(0);
      this.#start(
        isZlibHeader(head[0]!, head[1]!)
          ? zlib.createInflate(this.#options())
          : zlib.createInflateRaw(this.#options()),
      );
      data = head;
    }
    const stream = this.#stream!;
    if (stream.destroyed) {
      throw this.#error ?? new Error("Cannot decode response body: the decoder was stopped");
    }
    if (stream.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error) => {
        stream.off("drain", onDrain);
        stream.off("error", onError);
        stream.off("close", onClose);
        if (error) reject(error);
        else resolve();
      };
      const onDrain = () => done();
      const onError = (e: Error) => done(e);
      const onClose = () =>
        done(this.#error ?? new Error("Cannot decode response body: the decoder closed"));
      stream.on("drain", onDrain);
      stream.on("error", onError);
      stream.on("close", onClose);
    });
  }

  /** Ends the compressed input; {@linkcode output} finishes after the last decoded bytes. */
  end(): void {
    if (this.#stream === null) {
      this.#start(
        this.#coding === "deflate" ? zlib.createInflateRaw(this.#options()) : this.#brotli(),
      );
      if (this.#head.length > 0) this.#stream!.write(this.#head);
    }
    this.#stream!.end();
  }

  /** Stops decoding and frees the decoder (pending writes and the output iteration fail). */
  destroy(): void {
    this.#stream?.destroy();
    if (this.#stream === null) {
      this.#ready.reject(new Error("Cannot decode response body: aborted"));
    }
  }

  /**
   * The decoded bytes, in order. Throws if the compressed data is corrupt or truncated.
   */
  async *output(): AsyncGenerator<Uint8Array> {
    const stream = await this.#ready.promise;
    for await (const piece of stream) yield piece as Uint8Array;
  }
}
