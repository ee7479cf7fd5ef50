/**
 * Reads a byte stream line by line (a child's stdout, a socket speaking JSON lines): what the
 * tests that wait for a server's ports or exchange JSON-RPC messages share.
 *
 * @module
 */

/** Lines of a UTF-8 stream, one at a time. */
export class LineReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buf = "";

  /** Reads `stream` (its reader is held until {@linkcode release}). */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next line without its newline; null once the stream ended first. */
  async next(): Promise<string | null> {
    while (!this.#buf.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buf += value;
    }
    const i = this.#buf.indexOf("\n");
    const line = this.#buf.slice(0, i);
    this.#buf = this.#buf.slice(i + 1);
    return line;
  }

  /** The next line parsed as JSON; throws `ended()`'s error when the stream ended first. */
  async nextJson(ended: () => Promise<Error> | Error): Promise<Record<string, unknown>> {
    const line = await this.next();
    if (line === null) throw await ended();
    return JSON.parse(line);
  }

  /** Stops reading and cancels the stream (closing a socket or pipe under it). */
  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }

  /** Lets go of the stream (it can then be cancelled or read elsewhere). */
  release(): void {
    this.#reader.releaseLock();
  }
}
