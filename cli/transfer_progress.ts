/**
 * Progress of `checkpoint push` and `pull` on stderr: chunks, bytes and rate, on one line that
 * is redrawn on a terminal (at most 10 times a second), or as a line per 10% otherwise.
 *
 * @module
 */

import type { TransferProgress } from "../store/mod.ts";
import { formatBytes } from "./store.ts";

/** Renders {@linkcode TransferProgress} events. */
export class TransferPrinter {
  readonly #tty = Deno.stderr.isTerminal();
  readonly #label: string;
  readonly #started = performance.now();
  readonly #encoder = new TextEncoder();
  #lastDraw = 0;
  #lastTenth = -1;
  #drawn = false;

  /** @param label What is moving, e.g. `pushing env to ghcr.io/o/env:v1`. */
  constructor(label: string) {
    this.#label = label;
  }

  /** Handles one event. */
  onProgress = (p: TransferProgress): void => {
    const now = performance.now();
    const done = p.totalChunks === 0 || p.doneChunks >= p.totalChunks;
    const tenth = p.totalBytes > 0 ? Math.floor((p.doneBytes / p.totalBytes) * 10) : 10;
    if (this.#tty) {
      if (!done && now - this.#lastDraw < 100) return;
      this.#lastDraw = now;
      this.#write(`\r\x1b[2K${this.#text(p, now)}`);
      this.#drawn = true;
      return;
    }
    if (tenth === this.#lastTenth && !done) return;
    if (done && this.#lastTenth === 10) return;
    this.#lastTenth = done ? 10 : tenth;
    this.#write(this.#text(p, now) + "\n");
  };

  #text(p: TransferProgress, now: number): string {
    const seconds = Math.max(0.001, (now - this.#started) / 1000);
    const rate = formatBytes(Math.round(p.doneBytes / seconds));
    const wire = p.wireBytes > 0 ? `, ${formatBytes(p.wireBytes)} on the wire` : "";
    return `shuru: ${this.#label}: ${p.doneChunks}/${p.totalChunks} chunks, ` +
      `${formatBytes(p.doneBytes)}/${formatBytes(p.totalBytes)}${wire}, ${rate}/s`;
  }

  /** Ends the redrawn line (call when done or on errors). */
  finish(): void {
    if (this.#tty && this.#drawn) this.#write("\n");
    this.#drawn = false;
  }

  #write(text: string): void {
    Deno.stderr.writeSync(this.#encoder.encode(text));
  }
}
