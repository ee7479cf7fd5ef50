/**
 * A writer for cpio "newc" archives (the initramfs format the kernel unpacks).
 *
 * Writing the archive ourselves lets us add device nodes (`/dev/console`) without root and
 * makes the output byte-for-byte reproducible (fixed inode numbers and mtimes).
 *
 * @module
 */

/** File type bits of `mode`. */
export const S_IFDIR = 0o040000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Symbolic link. */
export const S_IFLNK = 0o120000;
/** Character device. */
export const S_IFCHR = 0o020000;

/** One archive member. Paths are relative (no leading slash), e.g. `bin/busybox`. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "chardev"; path: string; major: number; minor: number; mode?: number };

const encoder = new TextEncoder();
const HEADER_SIZE = 110;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`cpio field out of range: ${n}`);
  }
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

interface Member {
  name: Uint8Array;
  mode: number;
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
}

function toMember(entry: CpioEntry): Member {
  const name = encoder.encode(entry.path.replace(/^\/+/, ""));
  switch (entry.kind) {
    case "dir":
      return {
        name,
        mode: S_IFDIR | (entry.mode ?? 0o755),
        data: new Uint8Array(),
        rdevMajor: 0,
        rdevMinor: 0,
      };
    case "file":
      return {
        name,
        mode: S_IFREG | (entry.mode ?? 0o644),
        data: entry.data,
        rdevMajor: 0,
        rdevMinor: 0,
      };
    case "symlink":
      return {
        name,
        mode: S_IFLNK | 0o777,
        data: encoder.encode(entry.target),
        rdevMajor: 0,
        rdevMinor: 0,
      };
    case "chardev":
      return {
        name,
        mode: S_IFCHR | (entry.mode ?? 0o600),
        data: new Uint8Array(),
        rdevMajor: entry.major,
        rdevMinor: entry.minor,
      };
  }
}

function header(m: Member, ino: number): Uint8Array {
  const fields = [
    ino,
    m.mode,
    0,
    0, // ino, mode, uid, gid
    (m.mode & S_IFDIR) === S_IFDIR ? 2 : 1, // nlink
    0, // mtime: fixed, for reproducible archives
    m.data.length,
    0,
    0, // devmajor, devminor
    m.rdevMajor,
    m.rdevMinor,
    m.name.length + 1, // namesize includes the NUL
    0, // check
  ];
  return encoder.encode("070701" + fields.map(hex8).join(""));
}

/** Returns the newc archive of `entries` in order, ending with the `TRAILER!!!` member. */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array<ArrayBuffer> {
  const members = entries.map(toMember);
  members.push({
    name: encoder.encode("TRAILER!!!"),
    mode: 0,
    data: new Uint8Array(),
    rdevMajor: 0,
    rdevMinor: 0,
  });
  let size = 0;
  for (const m of members) {
    const head = HEADER_SIZE + m.name.length + 1;
    size += head + pad4(head) + m.data.length + pad4(m.data.length);
  }
  const out = new Uint8Array(size);
  let at = 0;
  members.forEach((m, i) => {
    const isTrailer = i === members.length - 1;
    out.set(header(m, isTrailer ? 0 : i + 1), at);
    at += HEADER_SIZE;
    out.set(m.name, at);
    at += m.name.length + 1; // NUL already zero
    at += pad4(HEADER_SIZE + m.name.length + 1);
    out.set(m.data, at);
    at += m.data.length + pad4(m.data.length);
  });
  return out;
}
