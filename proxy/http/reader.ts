/**
 * The HTTP relay's reader: the byte buffer of io/ plus HTTP heads, searched in place in the
 * buffer, and the relay's own errors for a stream that ends inside a head or a body.
 *
 * @module
 */

import { BufferedReader, type ByteSource } from "../../io/mod.ts";
import { MAX_HEAD_BYTES, READ_BUFFER_BYTES } from "./constants.ts";
import { HttpRelayError } from "./error.ts";
import { findHeadEnd } from "./head.ts";

/** Reads from a stream through one buffer: heads are searched in place, bodies handed out as views. */
export class HttpReader extends BufferedReader {
  constructor(conn: ByteSource) {
    super(conn, {
      bufferSize: READ_BUFFER_BYTES,
      shortRead: (message) => new HttpRelayError("truncated", message),
    });
  }

  /**
   * The next head (a copy), skipping CRLFs before it (RFC 9112 §2.2); null at a clean end of
   * stream.
   */
  async readHead(): Promise<Uint8Array | null> {
    let searched = 0;
    for (;;) {
      let window = this.peek();
      while (window.length >= 2 && window[0] === 0x0d && window[1] === 0x0a) {
        this.consume(2);
        window = this.peek();
        searched = 0;
      }
      const end = findHeadEnd(window, Math.max(0, searched - 3));
      if (end > MAX_HEAD_BYTES) {
        throw new HttpRelayError(
          "head-too-large",
          `Cannot read HTTP head: longer than ${MAX_HEAD_BYTES} bytes`,
        );
      }
      if (end !== -1) {
        const head = window.slice(0, end);
        this.consume(end);
        return head;
      }
      searched = window.length;
      if (window.length >= MAX_HEAD_BYTES) {
        throw new HttpRelayError(
          "head-too-large",
          `Cannot read HTTP head: longer than ${MAX_HEAD_BYTES} bytes`,
        );
      }
      if (!await this.fill()) {
        if (this.buffered === 0) return null;
        throw new HttpRelayError("truncated", "Cannot read HTTP head: the stream ended inside it");
      }
    }
  }

  /** Exactly `length` bytes of a body into a new array. */
  override readExact(length: number, what = "HTTP body"): Promise<Uint8Array> {
    return super.readExact(length, what);
  }
}
