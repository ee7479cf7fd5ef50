/**
 * Tar archives, the one codec of the project: a streaming reader of what image layers and
 * asset bundles hold (POSIX ustar with pax extended headers: long names, large sizes,
 * `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`; GNU long names and links, `L` and `K`; GNU base-256
 * numbers; the old v7 header), and the ustar header of a regular file for writing one.
 *
 * Every header field is read through the {@link field} table below and decoded with a
 * range-checked parser: a bad checksum, a malformed number, an unknown entry type or a
 * truncated stream is one error naming the entry and the field (a {@linkcode TarError}, or the
 * owner's own error through {@linkcode TarReaderOptions.error}). Nothing is allocated from a
 * size before it is checked against a cap.
 *
 * ```ts ignore
 * const tar = new TarReader(stream, { what: "layer 1" });
 * for (let e = await tar.next(); e; e = await tar.next()) {
 *   if (e.type === "file") await tar.readData((chunk) => sink.write(chunk));
 * }
 * ```
 *
 * @module
 */

/** Header field offsets and lengths (POSIX.1-1988 ustar, GNU and v7 share the first 257). */
const field = {
  NAME: [0, 100],
  MODE: [100, 8],
  UID: [108, 8],
  GID: [116, 8],
  SIZE: [124, 12],
  MTIME: [136, 12],
  CHECKSUM: [148, 8],
  TYPEFLAG: [156, 1],
  LINKNAME: [157, 100],
  MAGIC: [257, 6],
  VERSION: [263, 2],
  UNAME: [265, 32],
  GNAME: [297, 32],
  DEVMAJOR: [329, 8],
  DEVMINOR: [337, 8],
  PREFIX: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;

/** A tar block; headers are one block, data is padded to whole blocks. */
export const BLOCK = 512;
/** Largest pax extended header or GNU long name/link accepted (bytes). */
export const MAX_META_BYTES = 1024 * 1024;

/** Entry types after the meta entries (pax, GNU long names) are folded in. */
export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/** One archive member. */
export interface TarEntry {
  /** What it is. */
  type: TarEntryType;
  /** Its path as written in the archive (pax `path` and GNU long names applied). */
  path: string;
  /** Symlink target, or the hard link's target path; "" otherwise. */
  linkName: string;
  /** Data bytes that follow the header (0 except for files). */
  size: number;
  /** Permission bits, including setuid, setgid and sticky (07777). */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Modification time in seconds since the epoch. */
  mtime: number;
  /** Device numbers of `char` and `block` entries. */
  devMajor: number;
  /** Device numbers of `char` and `block` entries. */
  devMinor: number;
  /** Extended attributes (`security.capability`, `user.*`, ...), raw values. */
  xattrs: Map<string, Uint8Array>;
}

const TYPES: Record<string, TarEntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin = new TextDecoder("latin1");

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  /** Bytes handed out or skipped so far. */
  consumed = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Buffers at least `n` bytes unless the stream ends first; returns what is buffered. */
  async #fill(n: number): Promise<number> {
    while (this.#buffered < n && !this.#ended) {
      const { value, done } = await this.#reader.read();
      if (done) this.#ended = true;
      else if (value.length > 0) {
        this.#chunks.push(value);
        this.#buffered += value.length;
      }
    }
    return this.#buffered;
  }

  /** Exactly `n` bytes; `null` when the stream ended before the first of them. */
  async exact(n: number): Promise<Uint8Array | null | "short"> {
    const have = await this.#fill(n);
    if (have === 0) return null;
    if (have < n) return "short";
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const head = this.#chunks[0]!;
      const take = Math.min(head.length, n - off);
      out.set(head.subarray(0, take), off);
      off += take;
      this.#consume(take);
    }
    return out;
  }

  /** Hands the next `n` bytes to `sink` in pieces; `false` when the stream ends first. */
  async forward(n: number, sink?: (chunk: Uint8Array) => void | Promise<void>): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (this.#buffered === 0 && (await this.#fill(1)) === 0) return false;
      const head = this.#chunks[0]!;
      const take = Math.min(head.length, left);
      const piece = head.subarray(0, take);
      this.#consume(take);
      left -= take;
      if (sink) await sink(piece);
    }
    return true;
  }

  /** Reads and drops everything up to the end of the stream. */
  async drain(): Promise<void> {
    this.#chunks = [];
    this.consumed += this.#buffered;
    this.#buffered = 0;
    while (!this.#ended) {
      const { value, done } = await this.#reader.read();
      if (done) this.#ended = true;
      else this.consumed += value.length;
    }
  }

  #consume(n: number): void {
    this.consumed += n;
    const head = this.#chunks[0]!;
    if (n === head.length) this.#chunks.shift();
    else this.#chunks[0] = head.subarray(n);
    this.#buffered -= n;
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

/** A malformed or truncated archive (the default error of {@linkcode TarReader}). */
export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarError";
  }
}

/** Options of {@linkcode TarReader}. */
export interface TarReaderOptions {
  /** What the archive is, for messages ("layer 2 (sha256:ab12…)"). */
  what?: string;
  /** The error for a malformed archive, from its message (default: a {@linkcode TarError}). */
  error?: (message: string) => Error;
}

/** Reads entries one at a time; see the module doc. */
export class TarReader {
  readonly #bytes: ByteReader;
  readonly #what: string;
  readonly #error: (message: string) => Error;
  #pending = 0;
  #ended = false;
  #global = new Map<string, Uint8Array>();
  #index = 0;

  /**
   * @param stream The uncompressed tar bytes.
   * @param options Naming for messages.
   */
  constructor(stream: ReadableStream<Uint8Array>, options: TarReaderOptions = {}) {
    this.#bytes = new ByteReader(stream);
    this.#what = options.what ?? "the archive";
    this.#error = options.error ?? ((message) => new TarError(message));
  }

  #fail(message: string): never {
    throw this.#error(`Cannot read ${this.#what}: ${message}`);
  }

  /** The next entry, or `null` at the end of the archive. Skips unread data of the last one. */
  async next(): Promise<TarEntry | null> {
    if (this.#ended) return null;
    await this.#skipPending();
    let pax = new Map<string, Uint8Array>();
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const block = await this.#bytes.exact(BLOCK);
      if (block === null) {
        // EOF without the two zero blocks: tolerated (several writers stop after the data).
        this.#ended = true;
        if (pax.size || longName !== undefined || longLink !== undefined) {
          this.#fail("it ends after an extended header, without the entry it describes");
        }
        return null;
      }
      if (block === "short") this.#fail("it is truncated inside a header");
      if (block.every((b) => b === 0)) {
        // The end. What follows (the second zero block, padding to the record size) is read
        // to the end of the stream, so verifiers downstream see every byte.
        this.#ended = true;
        await this.#bytes.drain();
        return null;
      }
      this.#index++;
      const raw = this.#header(block);
      if (raw.typeflag === "x" || raw.typeflag === "g") {
        const records = parsePax(await this.#meta(raw.size, "pax header"), (m) => this.#fail(m));
        if (raw.typeflag === "g") { for (const [k, v] of records) this.#global.set(k, v); }
        else pax = records;
        continue;
      }
      if (raw.typeflag === "L" || raw.typeflag === "K") {
        const text = cString(await this.#meta(raw.size, "GNU long name"));
        const name = this.#text(text, raw.typeflag === "L" ? "long name" : "long link name");
        if (raw.typeflag === "L") longName = name;
        else longLink = name;
        continue;
      }
      const type = TYPES[raw.typeflag];
      if (type === undefined) {
        this.#fail(
          `entry ${this.#index} (${JSON.stringify(raw.name)}) has type ` +
            `${JSON.stringify(raw.typeflag)}, which this reader does not know`,
        );
      }
      const ext = new Map([...this.#global, ...pax]);
      const entry: TarEntry = {
        type,
        path: longName ?? raw.name,
        linkName: longLink ?? raw.linkName,
        size: raw.size,
        mode: raw.mode & 0o7777,
        uid: raw.uid,
        gid: raw.gid,
        mtime: raw.mtime,
        devMajor: raw.devMajor,
        devMinor: raw.devMinor,
        xattrs: new Map(),
      };
      this.#applyPax(entry, ext);
      if (entry.path === "") this.#fail(`entry ${this.#index} has an empty name`);
      // Only regular files carry data we hand out; anything else's data is skipped.
      this.#pending = entry.size;
      if (entry.type !== "file") entry.size = 0;
      return entry;
    }
  }

  /**
   * Passes the current file's data to `sink` (in pieces, each valid only during the call).
   * Call at most once per entry, before {@linkcode next}.
   */
  async readData(sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void> {
    const n = this.#pending;
    this.#pending = 0;
    if (!(await this.#bytes.forward(n, sink))) this.#fail("it is truncated inside a file's data");
    await this.#skipPadding(n);
  }

  /** Offset in the stream of the current entry's data (right after its headers). */
  get dataOffset(): number {
    return this.#bytes.consumed;
  }

  /** Stops reading (the underlying stream is cancelled). */
  async cancel(): Promise<void> {
    this.#ended = true;
    await this.#bytes.cancel();
  }

  async #skipPending(): Promise<void> {
    const n = this.#pending;
    this.#pending = 0;
    if (!(await this.#bytes.forward(n))) this.#fail("it is truncated inside an entry's data");
    await this.#skipPadding(n);
  }

  async #skipPadding(n: number): Promise<void> {
    const pad = (BLOCK - (n % BLOCK)) % BLOCK;
    if (pad && !(await this.#bytes.forward(pad))) this.#fail("it is truncated in padding");
  }

  async #meta(size: number, what: string): Promise<Uint8Array> {
    if (size > MAX_META_BYTES) {
      this.#fail(`entry ${this.#index} has a ${size}-byte ${what} (at most ${MAX_META_BYTES})`);
    }
    const data = size === 0 ? new Uint8Array(0) : await this.#bytes.exact(size);
    if (data === null || data === "short") this.#fail(`it is truncated inside a ${what}`);
    await this.#skipPadding(size);
    return data;
  }

  #text(bytes: Uint8Array, what: string): string {
    try {
      return utf8.decode(bytes);
    } catch {
      return this.#fail(`entry ${this.#index}'s ${what} is not UTF-8`);
    }
  }

  /** Decodes and checks one header block (never modifies it). */
  #header(block: Uint8Array) {
    const slice = (f: readonly [number, number]) => block.subarray(f[0], f[0] + f[1]);
    const num = (name: keyof typeof field) => {
      const v = parseNumber(slice(field[name]));
      if (v === undefined) {
        this.#fail(
          `entry ${this.#index}'s ${name.toLowerCase()} field ` +
            `${JSON.stringify(latin.decode(slice(field[name])))} is not a number`,
        );
      }
      return v;
    };
    const stored = num("CHECKSUM");
    const [unsigned, signed] = checksums(block);
    if (stored !== unsigned && stored !== signed) {
      this.#fail(
        `entry ${this.#index}'s header checksum is ${stored}, the header sums to ${unsigned} ` +
          "(corrupt or not a tar archive)",
      );
    }
    const magic = latin.decode(slice(field.MAGIC));
    const ustar = magic === "ustar\0";
    const name = this.#text(cString(slice(field.NAME)), "name");
    const prefix = ustar ? this.#text(cString(slice(field.PREFIX)), "name prefix") : "";
    const typeflag = String.fromCharCode(block[field.TYPEFLAG[0]]!);
    const size = num("SIZE");
    const device = typeflag === "3" || typeflag === "4";
    return {
      name: prefix ? `${prefix}/${name}` : name,
      typeflag,
      size,
      mode: num("MODE"),
      uid: num("UID"),
      gid: num("GID"),
      mtime: num("MTIME"),
      linkName: this.#text(cString(slice(field.LINKNAME)), "link name"),
      devMajor: device ? num("DEVMAJOR") : 0,
      devMinor: device ? num("DEVMINOR") : 0,
    };
  }

  #applyPax(entry: TarEntry, ext: Map<string, Uint8Array>): void {
    for (const [key, value] of ext) {
      const text = () => this.#text(value, `pax ${key}`);
      const int = () => {
        const t = text();
        // mtime may carry a fraction; integers elsewhere.
        if (!/^\d+(\.\d+)?$/.test(t) || (key !== "mtime" && t.includes("."))) {
          this.#fail(`entry ${this.#index}'s pax ${key} ${JSON.stringify(t)} is not a number`);
        }
        const n = Math.floor(Number(t));
        if (!Number.isSafeInteger(n)) this.#fail(`entry ${this.#index}'s pax ${key} is too large`);
        return n;
      };
      if (key === "path") entry.path = text();
      else if (key === "linkpath") entry.linkName = text();
      else if (key === "size") entry.size = int();
      else if (key === "uid") entry.uid = int();
      else if (key === "gid") entry.gid = int();
      else if (key === "mtime") entry.mtime = int();
      else if (key === "SCHILY.devmajor") entry.devMajor = int();
      else if (key === "SCHILY.devminor") entry.devMinor = int();
      else if (key.startsWith("SCHILY.xattr.")) {
        entry.xattrs.set(key.slice("SCHILY.xattr.".length), value);
      } else if (key.startsWith("LIBARCHIVE.xattr.")) {
        const name = decodeURIComponent(key.slice("LIBARCHIVE.xattr.".length));
        try {
          entry.xattrs.set(name, Uint8Array.fromBase64(text().replace(/=+$/, ""), {}));
        } catch {
          this.#fail(`entry ${this.#index}'s xattr ${name} is not base64`);
        }
      }
      // Other keys (atime, ctime, uname, gname, comments, charset) change nothing we keep.
    }
  }
}

/** The bytes before the first NUL. */
function cString(bytes: Uint8Array): Uint8Array {
  const end = bytes.indexOf(0);
  return end < 0 ? bytes : bytes.subarray(0, end);
}

/**
 * A numeric header field: octal digits with optional leading spaces and trailing spaces or
 * NULs (an all-blank field is 0), or GNU base-256 (first byte's high bit set, positive only).
 * `undefined` when malformed or past `Number.MAX_SAFE_INTEGER`.
 */
export function parseNumber(bytes: Uint8Array): number | undefined {
  if (bytes.length > 0 && bytes[0]! & 0x80) {
    if (bytes[0] === 0xff) return undefined; // negative
    let v = bytes[0]! & 0x7f;
    for (let i = 1; i < bytes.length; i++) {
      v = v * 256 + bytes[i]!;
      if (v > Number.MAX_SAFE_INTEGER) return undefined;
    }
    return v;
  }
  let i = 0;
  while (i < bytes.length && bytes[i] === 0x20) i++;
  let v = 0;
  let digits = 0;
  for (; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c < 0x30 || c > 0x37) break;
    v = v * 8 + (c - 0x30);
    digits++;
  }
  for (; i < bytes.length; i++) if (bytes[i] !== 0x20 && bytes[i] !== 0) return undefined;
  if (digits === 0) return 0;
  return v <= Number.MAX_SAFE_INTEGER ? v : undefined;
}

/** Header sums with the checksum field counted as spaces: unsigned and (old writers) signed. */
export function checksums(block: Uint8Array): [number, number] {
  let unsigned = 0;
  let signed = 0;
  const [start, len] = field.CHECKSUM;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= start && i < start + len ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return [unsigned, signed];
}

/** Parses pax records `LEN KEY=VALUE\n`; values stay bytes (xattrs are binary). */
export function parsePax(
  data: Uint8Array,
  fail: (message: string) => never,
): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, off);
    const lenText = space < 0 ? "" : latin.decode(data.subarray(off, space));
    const len = /^\d{1,8}$/.test(lenText) ? Number(lenText) : NaN;
    if (!(len > 0) || off + len > data.length || data[off + len - 1] !== 0x0a) {
      fail(`a pax record at byte ${off} has a bad length ${JSON.stringify(lenText)}`);
    }
    const record = data.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) fail(`a pax record at byte ${off} has no key`);
    let key: string;
    try {
      key = utf8.decode(record.subarray(0, eq));
    } catch {
      fail(`a pax record at byte ${off} has a key that is not UTF-8`);
    }
    out.set(key, record.slice(eq + 1));
    off += len;
  }
  return out;
}

/** Padding after `size` bytes of file data, up to the next block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

const encoder = new TextEncoder();

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

/** The ustar header block of a regular file owned by root (name up to 100 bytes). */
export function encodeHeader(
  entry: { name: string; size: number; mode: number; mtime: number },
): Uint8Array<ArrayBuffer> {
  const block = new Uint8Array(BLOCK);
  putText(block, field.NAME, entry.name);
  putOctal(block, field.MODE, entry.mode);
  putOctal(block, field.UID, 0);
  putOctal(block, field.GID, 0);
  putOctal(block, field.SIZE, entry.size);
  putOctal(block, field.MTIME, entry.mtime);
  putText(block, field.TYPEFLAG, "0");
  putText(block, field.MAGIC, "ustar\0");
  putText(block, field.VERSION, "00");
  putText(block, field.UNAME, "root");
  putText(block, field.GNAME, "root");
  // The checksum: six octal digits, NUL, space.
  putText(block, field.CHECKSUM, checksums(block)[0].toString(8).padStart(6, "0") + "\0 ");
  return block;
}
