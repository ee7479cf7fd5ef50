/**
 * Reading a paused QEMU guest's RAM from the host, for memory snapshots.
 *
 * Guest RAM lives in a file (`VmConfig.memory`). QEMU maps it shared (the file is the RAM) or
 * private (copy-on-write: the guest starts from the file's bytes, and each page it writes
 * becomes a private anonymous page of the QEMU process). For a private mapping the file no
 * longer tells what the guest holds; `/proc/PID/pagemap` tells which pages were copied (present
 * and not a file page, or swapped out), and `/proc/PID/mem` reads them. So saving a VM that was
 * restored from an image costs the pages it wrote since, not its whole RAM.
 *
 * The VM must be paused while its RAM is read (`Vm.pause()`), or the bytes are torn.
 *
 * @module
 */

import * as fs from "node:fs";
import { VmError } from "./errors.ts";
import type { MemoryFile } from "./types.ts";

/** Guest page size on x86_64. */
export const PAGE_SIZE = 4096;

/** pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). */
const PM = {
  PRESENT: 1n << 63n,
  SWAPPED: 1n << 62n,
  FILE: 1n << 61n,
} as const;

/** A paused VM's RAM. */
export interface GuestRam {
  /** RAM size in bytes. */
  readonly size: number;
  /** The RAM file and how it is mapped. */
  readonly file: MemoryFile;
  /**
   * One bit per {@linkcode PAGE_SIZE} page (bit `i & 7` of byte `i >> 3`), set when the page's
   * bytes may differ from the RAM file's. Shared mapping: none (the file is the RAM).
   */
  changedPages(): Promise<Uint8Array>;
  /** Reads `dst.length` bytes of guest RAM at `offset` (guest-physical RAM offset). */
  read(offset: number, dst: Uint8Array): Promise<void>;
  /** Releases the files. */
  close(): void;
}

/** One line of `/proc/PID/maps`. */
export interface Mapping {
  start: number;
  end: number;
  perms: string;
  offset: number;
  path: string;
}

/** Parses `/proc/PID/maps` text. */
export function parseMaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      start: parseInt(m[1]!, 16),
      end: parseInt(m[2]!, 16),
      perms: m[3]!,
      offset: parseInt(m[4]!, 16),
      path: m[5]!,
    });
  }
  return out;
}

/**
 * Sets, in a page bitmap, the pages whose pagemap entries say they are not the file's bytes:
 * for a private file mapping, a present page that is not a file page (copied on write) or a
 * swapped-out page. `entries` are raw little-endian u64 pagemap entries, page `first` onwards.
 */
export function markChangedPages(
  entries: Uint8Array,
  into: { first: number; bitmap: Uint8Array },
): number {
  const { first, bitmap } = into;
  const view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
  let changed = 0;
  for (let k = 0; k * 8 < entries.length; k++) {
    const e = view.getBigUint64(k * 8, true);
    const copied = ((e & PM.PRESENT) !== 0n && (e & PM.FILE) === 0n) || (e & PM.SWAPPED) !== 0n;
    if (!copied) continue;
    const i = first + k;
    bitmap[i >>> 3]! |= 1 << (i & 7);
    changed++;
  }
  return changed;
}

function pread(fd: number, dst: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, dst, 0, dst.length, position, (err, n) => err ? reject(err) : resolve(n));
  });
}

async function preadAll(fd: number, dst: Uint8Array, position: number, what: string) {
  let done = 0;
  while (done < dst.length) {
    const n = await pread(fd, dst.subarray(done), position + done);
    if (n === 0) throw new VmError("save_failed", `Cannot read guest RAM: ${what} ended early`);
    done += n;
  }
}

/** Options of {@linkcode openGuestRam}. */
export interface OpenGuestRamOptions {
  /** The RAM file the QEMU process was started with, and how it maps it. */
  file: MemoryFile;
  /** Guest RAM size in bytes. */
  size: number;
}

/**
 * Opens the guest RAM of QEMU process `pid`, which maps `file` for `size` bytes.
 *
 * @throws {VmError} `save_failed` when the mapping is not found or `/proc` cannot be read.
 */
export async function openGuestRam(pid: number, options: OpenGuestRamOptions): Promise<GuestRam> {
  const { file, size } = options;
  const action = "Cannot read guest RAM";
  let maps: Mapping[];
  let real: string;
  try {
    maps = parseMaps(await Deno.readTextFile(`/proc/${pid}/maps`));
    real = await Deno.realPath(file.path);
  } catch (err) {
    throw new VmError("save_failed", `${action}: ${(err as Error).message}`, { cause: err });
  }
  const mapping = maps.find((m) =>
    (m.path === real || m.path === `${real} (deleted)`) && m.offset === 0 &&
    m.end - m.start >= size && m.perms.startsWith("rw")
  );
  if (!mapping) {
    throw new VmError(
      "save_failed",
      `${action}: QEMU (pid ${pid}) has no ${size}-byte mapping of ${file.path}`,
    );
  }
  const shared = mapping.perms[3] === "s";
  if (shared !== file.shared) {
    throw new VmError(
      "save_failed",
      `${action}: ${file.path} is mapped ${shared ? "shared" : "private"}, expected otherwise`,
    );
  }
  const fds: number[] = [];
  try {
    fds.push(fs.openSync(`/proc/${pid}/mem`, "r"));
    if (!shared) fds.push(fs.openSync(`/proc/${pid}/pagemap`, "r"));
  } catch (err) {
    for (const fd of fds) fs.closeSync(fd);
    throw new VmError("save_failed", `${action}: ${(err as Error).message}`, { cause: err });
  }
  const [mem, pagemap] = fds as [number, number | undefined];
  let closed = false;
  return {
    size,
    file,
    async changedPages() {
      const pages = Math.ceil(size / PAGE_SIZE);
      const bitmap = new Uint8Array(Math.ceil(pages / 8));
      if (pagemap === undefined) return bitmap;
      // 8 bytes per page: 4 MiB for 2 GiB of RAM, read in 1 MiB slices.
      const slice = 128 * 1024;
      const buf = new Uint8Array(slice * 8);
      const firstPage = mapping.start / PAGE_SIZE;
      for (let p = 0; p < pages; p += slice) {
        const n = Math.min(slice, pages - p);
        const part = buf.subarray(0, n * 8);
        await preadAll(pagemap, part, (firstPage + p) * 8, "pagemap");
        markChangedPages(part, { first: p, bitmap });
      }
      return bitmap;
    },
    async read(offset, dst) {
      if (offset < 0 || offset + dst.length > size) {
        throw new RangeError(`Cannot read guest RAM at ${offset}: outside ${size} bytes`);
      }
      await preadAll(mem, dst, mapping.start + offset, "the QEMU process memory");
    },
    close() {
      if (closed) return;
      closed = true;
      for (const fd of fds) fs.closeSync(fd);
    },
  };
}

/** What {@linkcode captureChangedRam} copied. */
export interface RamCapture {
  /** The capture file: RAM-sized and sparse, holding the copied blocks at their own offsets. */
  path: string;
  /** Block size of `blocks`. */
  blockSize: number;
  /** One byte per block: 1 = the block is in the capture file; 0 = it is the RAM file's. */
  blocks: Uint8Array;
  /** Blocks copied. */
  copiedBlocks: number;
  /** Pages that differed from the RAM file. */
  changedPages: number;
}

/** Options of {@linkcode captureChangedRam}. */
export interface CaptureOptions {
  /** The capture file to create (it must not exist). */
  path: string;
  /** Block size of the capture (the store's: 64 KiB); a multiple of the page size. */
  blockSize: number;
}

/**
 * Copies every `blockSize` block of guest RAM that holds a changed page into a new sparse file
 * at `path` (at the block's offset), so the VM can resume while the copy is stored. With a
 * shared mapping nothing differs from the RAM file and nothing is copied.
 */
export async function captureChangedRam(
  ram: GuestRam,
  options: CaptureOptions,
): Promise<RamCapture> {
  const { path, blockSize } = options;
  if (blockSize % PAGE_SIZE !== 0 || blockSize <= 0) {
    throw new RangeError(`Cannot capture RAM in ${blockSize}-byte blocks: not a page multiple`);
  }
  const pages = await ram.changedPages();
  const perBlock = blockSize / PAGE_SIZE;
  const count = Math.ceil(ram.size / blockSize);
  const blocks = new Uint8Array(count);
  let changedPages = 0;
  for (let b = 0; b < count; b++) {
    for (let p = b * perBlock; p < (b + 1) * perBlock; p++) {
      if ((pages[p >>> 3]! >> (p & 7)) & 1) {
        blocks[b] = 1;
        changedPages++;
      }
    }
  }
  const fd = fs.openSync(path, "wx", 0o600);
  let copiedBlocks = 0;
  try {
    fs.ftruncateSync(fd, ram.size);
    const buf = new Uint8Array(blockSize);
    for (let b = 0; b < count; b++) {
      if (!blocks[b]) continue;
      const len = Math.min(blockSize, ram.size - b * blockSize);
      const part = buf.subarray(0, len);
      await ram.read(b * blockSize, part);
      let off = 0;
      while (off < len) off += fs.writeSync(fd, part, off, len - off, b * blockSize + off);
      copiedBlocks++;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { path, blockSize, blocks, copiedBlocks, changedPages };
}

/**
 * Writes a complete RAM file at `out`: the blocks of `capture`, and every other block from
 * `base` (the RAM file the VM was mapped from). All-zero stretches stay holes, so the file
 * takes the space of the guest's used memory.
 */
export async function writeRamFile(
  capture: RamCapture,
  files: { base: string; out: string },
): Promise<void> {
  const { base: baseFile, out: outPath } = files;
  const bs = capture.blockSize;
  const size = fs.statSync(capture.path).size;
  const base = fs.openSync(baseFile, "r");
  const cap = fs.openSync(capture.path, "r");
  const out = fs.openSync(outPath, "wx", 0o600);
  try {
    fs.ftruncateSync(out, size);
    const buf = new Uint8Array(bs);
    for (let b = 0; b * bs < size; b++) {
      const len = Math.min(bs, size - b * bs);
      const part = buf.subarray(0, len);
      const src = capture.blocks[b] ? cap : base;
      let got = 0;
      while (got < len) {
        const n = await pread(src, part.subarray(got), b * bs + got);
        if (n === 0) break;
        got += n;
      }
      if (got < len) part.fill(0, got);
      if (isZeroBytes(part)) continue;
      let off = 0;
      while (off < len) off += fs.writeSync(out, part, off, len - off, b * bs + off);
    }
    fs.fsyncSync(out);
  } finally {
    fs.closeSync(base);
    fs.closeSync(cap);
    fs.closeSync(out);
  }
}

function isZeroBytes(data: Uint8Array): boolean {
  const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  for (let i = words.length * 4; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}
