/**
 * A raw image file as a {@linkcode BlockBackend}: for tests, benchmarks and serving a base
 * image read-only (`shuru nbd serve --base FILE --read-only`).
 *
 * Reads and writes use positional I/O (`pread`/`pwrite` underneath node:fs `read`/`write` with
 * a position), so any number of requests can run at once on the one file descriptor. All
 * connections share that descriptor and the page cache, so every connection sees every
 * completed write: CAN_MULTI_CONN holds.
 *
 * TRIM and zeroing use `fallocate(2)` (PUNCH_HOLE / ZERO_RANGE, via Deno FFI) and BLOCK_STATUS
 * uses `lseek(2)` SEEK_DATA/SEEK_HOLE. When FFI is not permitted (no `--allow-ffi`), TRIM does
 * nothing (it is only a hint), zeroing writes zeros, fast zeroing is not offered, and
 * BLOCK_STATUS reports the whole file as data. The same fallback serves every OS but Linux.
 *
 * @module
 */

import * as fs from "node:fs";
import { hostOs, openLibrary } from "../ffi/mod.ts";
import type { BlockBackend, Extent, WriteOptions } from "./backend.ts";
import { BlockBackendError } from "./backend.ts";

/** Options of {@linkcode FileBackend.open}. */
export interface FileBackendOptions {
  /** Refuse writes (and open the file read-only). @default false */
  readOnly?: boolean;
  /**
   * Device size in bytes; defaults to the file's size. A larger size reads as zeros past the
   * end of the file (and writes there grow the file).
   */
  size?: number;
}

function pread(fd: number, buf: Uint8Array, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, offset, buf.length - offset, position, (err, n) => {
      if (err) reject(err);
      else resolve(n);
    });
  });
}

function pwrite(fd: number, buf: Uint8Array, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buf, offset, buf.length - offset, position, (err, n) => {
      if (err) reject(err);
      else resolve(n);
    });
  });
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => err ? reject(err) : resolve()));
}

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

const RWF_NOWAIT = 0x08;
/** Reads up to this size try the page cache synchronously first. */
const CACHED_READ_MAX = 64 * 1024;

const LIBC_SYMBOLS = {
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32", nonblocking: true },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // Synchronous on purpose: with RWF_NOWAIT it only copies from the page cache, or fails at once.
  preadv2: { parameters: ["i32", "buffer", "i32", "i64", "i32"], result: "isize" },
  // On a worker thread. Measured against node:fs `read` (which dups and closes the fd per
  // call): 20-30% less CPU in total and on the main thread for sequential reads.
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  // Also on a worker thread: node:fs writes on the main thread, where a write stalled by dirty
  // page throttling would stop every connection.
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
} as const;

type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

function openLibc(): Libc | null {
  // fallocate, preadv2 and the SEEK_DATA/SEEK_HOLE values above are Linux's.
  if (hostOs() !== "linux") return null;
  try {
    return openLibrary("libc", LIBC_SYMBOLS);
  } catch {
    // No FFI permission: fall back to plain reads and writes.
    return null;
  }
}

/** Chunk of zeros reused for zeroing by writing. */
const ZERO_CHUNK = new Uint8Array(1024 * 1024);

/** A raw image file served as a block device. */
export class FileBackend implements BlockBackend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly multiConn = true;
  readonly canFastZero: boolean;
  #fd: number;
  #fileSize: number;
  #libc: Libc | null;
  #iov = new BigUint64Array(2);
  #closed = false;

  private constructor(fd: number, size: number, fileSize: number, readOnly: boolean) {
    this.#fd = fd;
    this.size = size;
    this.#fileSize = fileSize;
    this.readOnly = readOnly;
    this.#libc = openLibc();
    this.canFastZero = this.#libc !== null && !readOnly;
  }

  /**
   * Opens `path` as a device.
   *
   * @example
   * ```ts
   * import { FileBackend } from "./file_backend.ts";
   * const path = await Deno.makeTempFile();
   * await Deno.writeFile(path, new Uint8Array(4096).fill(7));
   * const backend = await FileBackend.open(path, { readOnly: true });
   * const first = await backend.read(0, 512);
   * await backend.close();
   * await Deno.remove(path);
   * if (first.length !== 512 || first[0] !== 7) throw new Error("unexpected bytes");
   * ```
   */
  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    const readOnly = options.readOnly ?? false;
    const fd = await new Promise<number>((resolve, reject) =>
      fs.open(path, readOnly ? "r" : "r+", (err, fd) => err ? reject(err) : resolve(fd))
    );
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new TypeError(`Cannot serve ${path}: not a regular file`);
      const size = options.size ?? st.size;
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new RangeError(`Cannot serve ${path}: invalid size ${size}`);
      }
      return new FileBackend(fd, size, st.size, readOnly);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    await this.readInto(offset, buf);
    return buf;
  }

  /** Reads `target.length` bytes at `offset` into `target` (zeros past the end of the file). */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    let done = this.#readCached(offset, target);
    const libc = this.#libc;
    while (done < target.length) {
      const rest = target.subarray(done);
      let n = libc !== null
        ? Number(
          await libc.symbols.pread(this.#fd, rest, BigInt(rest.length), BigInt(offset + done)),
        )
        : -1;
      // FFI gives no errno: a failed pread is retried through node:fs, whose error carries the
      // code (EIO, ...) that becomes the client's NBD error.
      if (n < 0) n = await pread(this.#fd, target, done, offset + done);
      if (n === 0) {
        target.fill(0, done); // past the end of the file reads as zeros
        break;
      }
      done += n;
    }
  }

  /**
   * Copies what the page cache already holds, without blocking: `preadv2(RWF_NOWAIT)` on the
   * calling thread. Returns the bytes read (0 if nothing was cached or FFI is unavailable); the
   * caller reads the rest through the thread pool. This skips a thread hand-off per request,
   * which dominates small cached reads.
   */
  #readCached(offset: number, target: Uint8Array): number {
    const libc = this.#libc;
    // Large reads stay on the pool: their copy then runs on another core, in parallel with
    // the socket writes on this thread (measured: faster for sequential reads).
    if (libc === null || target.length === 0 || target.length > CACHED_READ_MAX) return 0;
    const iov = this.#iov;
    iov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(target)));
    iov[1] = BigInt(target.length);
    const n = Number(libc.symbols.preadv2(this.#fd, iov, 1, BigInt(offset), RWF_NOWAIT));
    return n > 0 ? n : 0;
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.#checkWritable();
    const libc = this.#libc;
    let done = 0;
    while (done < data.length) {
      const rest = data.subarray(done);
      let n = libc !== null
        ? Number(
          await libc.symbols.pwrite(this.#fd, rest, BigInt(rest.length), BigInt(offset + done)),
        )
        : -1;
      // FFI gives no errno, so a failure is retried through node:fs, whose error carries the
      // code (ENOSPC, EIO, ...) that becomes the client's NBD error.
      if (n <= 0) n = await pwrite(this.#fd, data, done, offset + done);
      done += n;
    }
    this.#fileSize = Math.max(this.#fileSize, offset + data.length);
    if (options?.fua) await fdatasync(this.#fd);
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.#checkWritable();
    const libc = this.#libc;
    let done = false;
    if (libc !== null && offset < this.#fileSize) {
      const end = Math.min(offset + length, this.#fileSize);
      const modes = options?.noHole
        ? [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
        : [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];
      for (const mode of modes) {
        const rc = await libc.symbols.fallocate(
          this.#fd,
          mode,
          BigInt(offset),
          BigInt(end - offset),
        );
        if (rc === 0) {
          done = true;
          break;
        }
      }
      if (done && end < offset + length) {
        // Past the end of the file already reads as zeros; extend the file only if asked to
        // keep storage allocated.
        if (options?.noHole) await this.#writeZeros(end, offset + length - end);
      }
    } else if (libc !== null) {
      done = !options?.noHole; // entirely beyond the file: already zeros
      if (!done && !options?.fastZero) {
        await this.#writeZeros(offset, length);
        done = true;
      }
    }
    if (!done) {
      if (options?.fastZero) {
        throw new BlockBackendError("ENOTSUP", "Cannot zero fast: fallocate is unavailable");
      }
      await this.#writeZeros(offset, length);
    }
    if (options?.fua) await fdatasync(this.#fd);
  }

  async #writeZeros(offset: number, length: number): Promise<void> {
    for (let o = 0; o < length; o += ZERO_CHUNK.length) {
      const n = Math.min(ZERO_CHUNK.length, length - o);
      await this.write(offset + o, ZERO_CHUNK.subarray(0, n));
    }
  }

  async trim(offset: number, length: number): Promise<void> {
    this.#checkWritable();
    if (this.#libc === null || offset >= this.#fileSize) return;
    const len = Math.min(length, this.#fileSize - offset);
    // TRIM is a hint: a file system without hole punching simply keeps the data.
    await this.#libc.symbols.fallocate(
      this.#fd,
      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
      BigInt(offset),
      BigInt(len),
    );
  }

  flush(): Promise<void> {
    return this.readOnly ? Promise.resolve() : fdatasync(this.#fd);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    const libc = this.#libc;
    const end = offset + length;
    if (libc === null) return Promise.resolve([{ length, zero: false, hole: false }]);
    const out: Extent[] = [];
    let pos = offset;
    const fileEnd = this.#fileSize;
    while (pos < end && pos < fileEnd && out.length < 256) {
      const data = Number(libc.symbols.lseek(this.#fd, BigInt(pos), SEEK_DATA));
      if (data < 0 || data >= fileEnd) {
        // ENXIO: no data at or after pos; the rest of the file is a hole.
        out.push({ length: Math.min(end, fileEnd) - pos, zero: true, hole: true });
        pos = Math.min(end, fileEnd);
        break;
      }
      if (data > pos) {
        const l = Math.min(data, end) - pos;
        out.push({ length: l, zero: true, hole: true });
        pos += l;
        continue;
      }
      let hole = Number(libc.symbols.lseek(this.#fd, BigInt(pos), SEEK_HOLE));
      if (hole < 0 || hole <= pos) hole = fileEnd;
      const l = Math.min(hole, end) - pos;
      out.push({ length: l, zero: false, hole: false });
      pos += l;
    }
    if (pos < end && pos >= fileEnd) out.push({ length: end - pos, zero: true, hole: true });
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#libc?.close();
    return new Promise((resolve, reject) =>
      fs.close(this.#fd, (err) => err ? reject(err) : resolve())
    );
  }

  #checkWritable(): void {
    if (this.readOnly) throw new BlockBackendError("EPERM", "Cannot write: the file is read-only");
  }
}
