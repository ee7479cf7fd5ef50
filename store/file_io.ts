/**
 * Positional file I/O (pread/pwrite through `node:fs`), safe with many requests in flight on
 * one descriptor, unlike seek + read on a shared `Deno.FsFile`.
 *
 * @module
 */

import * as fs from "node:fs";

/** An open file descriptor with positional reads and writes. */
export class PositionalFile {
  /** The descriptor. */
  readonly fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Opens `path`; `mode` "r" (read), "r+" (read/write) or "wx+" (create new, read/write). */
  static open(path: string, mode: "r" | "r+" | "wx+"): Promise<PositionalFile> {
    return new Promise((resolve, reject) => {
      fs.open(path, mode, 0o600, (err, fd) => err ? reject(err) : resolve(new PositionalFile(fd)));
    });
  }

  /** Reads up to `dst.length` bytes at `position`; bytes past the end of file stay as they are. */
  async read(dst: Uint8Array, position: number): Promise<number> {
    let done = 0;
    while (done < dst.length) {
      const n = await new Promise<number>((resolve, reject) => {
        fs.read(
          this.fd,
          dst,
          done,
          dst.length - done,
          position + done,
          (err, bytes) => err ? reject(err) : resolve(bytes),
        );
      });
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Writes all of `src` at `position`. */
  async write(src: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < src.length) {
      done += await new Promise<number>((resolve, reject) => {
        fs.write(
          this.fd,
          src,
          done,
          src.length - done,
          position + done,
          (err, bytes) => err ? reject(err) : resolve(bytes),
        );
      });
    }
  }

  /** fdatasync. */
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (err) => err ? reject(err) : resolve());
    });
  }

  /** Closes the descriptor (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    fs.closeSync(this.fd);
  }
}
