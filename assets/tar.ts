/**
 * POSIX ustar headers: the one 512-byte block in front of each file of a tar archive. Only
 * what an asset bundle needs: regular files with short names. Encoding is a pure function;
 * parsing never mutates the block it reads and checks every numeric field's range.
 *
 * ```text
 * offset size field          offset size field
 *      0  100 name              257    6 magic  "ustar\0" (POSIX) / "ustar " (GNU)
 *    100    8 mode (octal)      263    2 version "00" / " \0"
 *    108    8 uid               265   32 uname
 *    116    8 gid               297   32 gname
 *    124   12 size (octal, or   329    8 devmajor
 *              base-256 when    337    8 devminor
 *              the high bit     345  155 prefix
 *              is set)
 *    136   12 mtime
 *    148    8 chksum (octal: the sum of the header's bytes, this field counted as spaces)
 *    156    1 typeflag ('0' or NUL: regular file)
 *    157  100 linkname
 * ```
 *
 * @module
 */

/** Size of a tar block. */
export const BLOCK = 512;

/** Field offsets and lengths of a ustar header. */
export const FIELD = {
  NAME: [0, 100],
  MODE: [100, 8],
  UID: [108, 8],
  GID: [116, 8],
  SIZE: [124, 12],
  MTIME: [136, 12],
  CHKSUM: [148, 8],
  TYPEFLAG: [156, 1],
  LINKNAME: [157, 100],
  MAGIC: [257, 6],
  VERSION: [263, 2],
  UNAME: [265, 32],
  GNAME: [297, 32],
  PREFIX: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;

/** What one header says. */
export interface TarEntry {
  /** Path in the archive (prefix and name joined). */
  name: string;
  /** File size in bytes. */
  size: number;
  /** Permission bits. */
  mode: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
  /** `file`, or the kind of anything else (which bundles refuse). */
  type: "file" | "directory" | "link" | "symlink" | "other";
}

/** A header could not be parsed; `field` names the culprit. */
export class TarError extends Error {
  /** The field at fault. */
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = "TarError";
    this.field = field;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function text(block: Uint8Array, [at, len]: readonly [number, number]): string {
  const bytes = block.subarray(at, at + len);
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** A numeric field: octal digits (spaces/NULs around), or base-256 when the high bit is set. */
function number(block: Uint8Array, name: keyof typeof FIELD): number {
  const [at, len] = FIELD[name];
  const bytes = block.subarray(at, at + len);
  if ((bytes[0]! & 0x80) !== 0) {
    // GNU base-256: big-endian two's complement in the remaining bits; only positive here.
    if ((bytes[0]! & 0x40) !== 0) throw new TarError(name, `Cannot read tar ${name}: negative`);
    let value = BigInt(bytes[0]! & 0x3f);
    for (const b of bytes.subarray(1)) value = (value << 8n) | BigInt(b);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new TarError(name, `Cannot read tar ${name}: too large`);
    }
    return Number(value);
  }
  const digits = decoder.decode(bytes).replace(/[\0 ]+$/, "").replace(/^ +/, "");
  if (!/^[0-7]+$/.test(digits)) {
    throw new TarError(name, `Cannot read tar ${name}: ${JSON.stringify(digits)} is not octal`);
  }
  return parseInt(digits, 8);
}

/** The header checksum of `block` (the checksum field counted as eight spaces). */
export function checksum(block: Uint8Array): number {
  const [at, len] = FIELD.CHKSUM;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= at && i < at + len ? 0x20 : block[i]!;
  return sum;
}

/** `true` for an all-zero block (two of them end an archive). */
export function isZeroBlock(block: Uint8Array): boolean {
  return block.every((b) => b === 0);
}

/**
 * Parses a 512-byte header.
 *
 * @throws {TarError} on a bad magic, checksum or numeric field.
 */
export function parseHeader(block: Uint8Array): TarEntry {
  if (block.length !== BLOCK) throw new TarError("block", "Cannot read a tar header: short block");
  const magic = text(block, FIELD.MAGIC);
  if (magic !== "ustar" && magic !== "ustar ") {
    throw new TarError("magic", `Cannot read a tar header: magic ${JSON.stringify(magic)}`);
  }
  const stored = number(block, "CHKSUM");
  if (stored !== checksum(block)) {
    throw new TarError(
      "chksum",
      `Cannot read a tar header: checksum ${stored} != ${checksum(block)}`,
    );
  }
  const prefix = text(block, FIELD.PREFIX);
  const name = (prefix ? `${prefix}/` : "") + text(block, FIELD.NAME);
  const flag = String.fromCharCode(block[FIELD.TYPEFLAG[0]]!);
  const type = flag === "0" || flag === "\0"
    ? "file"
    : flag === "5"
    ? "directory"
    : flag === "1"
    ? "link"
    : flag === "2"
    ? "symlink"
    : "other";
  return {
    name,
    size: number(block, "SIZE"),
    mode: number(block, "MODE"),
    mtime: number(block, "MTIME"),
    type,
  };
}

function putText(block: Uint8Array, [at, len]: readonly [number, number], value: string): void {
  const bytes = encoder.encode(value);
  if (bytes.length > len) throw new RangeError(`Cannot write tar field: ${value} is too long`);
  block.set(bytes, at);
}

function putOctal(block: Uint8Array, [at, len]: readonly [number, number], value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot write ${value} in tar`);
  }
  const digits = value.toString(8);
  if (digits.length > len - 1) throw new RangeError(`Cannot write ${value} in a ${len}-byte field`);
  putText(block, [at, len], digits.padStart(len - 1, "0"));
}

/** The ustar header block of a regular file (name up to 100 bytes). */
export function encodeHeader(
  entry: Pick<TarEntry, "name" | "size" | "mode" | "mtime">,
): Uint8Array<ArrayBuffer> {
  const block = new Uint8Array(BLOCK);
  putText(block, FIELD.NAME, entry.name);
  putOctal(block, FIELD.MODE, entry.mode);
  putOctal(block, FIELD.UID, 0);
  putOctal(block, FIELD.GID, 0);
  putOctal(block, FIELD.SIZE, entry.size);
  putOctal(block, FIELD.MTIME, entry.mtime);
  putText(block, FIELD.TYPEFLAG, "0");
  putText(block, FIELD.MAGIC, "ustar\0");
  putText(block, FIELD.VERSION, "00");
  putText(block, FIELD.UNAME, "root");
  putText(block, FIELD.GNAME, "root");
  // The checksum: six octal digits, NUL, space.
  putText(block, FIELD.CHKSUM, checksum(block).toString(8).padStart(6, "0") + "\0 ");
  return block;
}

/** Padding after `size` bytes of file data, up to the next block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
