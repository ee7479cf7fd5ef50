/**
 * `sandbox.fs`: the guest's files, shaped like Deno's file API (readFile, writeTextFile,
 * readDir as an async iterable, watch...). Files move in chunks through `read_file`/`write_file`
 * with offset and length, so any size works.
 *
 * @module
 */

import { type ControlClient, Limits } from "../control/mod.ts";
import { sdkRequest } from "./errors.ts";
import { concatBytes } from "../io/mod.ts";

/** One directory entry, like `Deno.DirEntry` plus its size. */
export interface SandboxDirEntry {
  /** File name. */
  name: string;
  /** Is a regular file. */
  isFile: boolean;
  /** Is a directory. */
  isDirectory: boolean;
  /** Is a symbolic link. */
  isSymlink: boolean;
  /** Size in bytes (regular files). */
  size: number;
}

/** File metadata, like `Deno.FileInfo`. */
export interface SandboxFileInfo {
  /** Is a regular file. */
  isFile: boolean;
  /** Is a directory. */
  isDirectory: boolean;
  /** Is a symbolic link. */
  isSymlink: boolean;
  /** Size in bytes. */
  size: number;
  /** Modification time. */
  mtime: Date | null;
  /** st_mode (type and permission bits). */
  mode: number;
}

/** A file change, like `Deno.FsEvent`. */
export interface SandboxFsEvent {
  /** What happened. */
  kind: "create" | "modify" | "remove" | "rename" | "other";
  /** Paths involved. */
  paths: string[];
}

/** A running watch: iterate it; `close()` stops it. */
export interface SandboxFsWatcher extends AsyncIterable<SandboxFsEvent>, AsyncDisposable {
  /** The protocol's watch id. */
  readonly id: string;
  /** Stops watching; the iteration ends. */
  close(): Promise<void>;
}

/** Options of {@linkcode SandboxFs.writeFile}. */
export interface WriteFileOptions {
  /** Permission bits of a new file. */
  mode?: number;
  /** Append to the file instead of replacing it. */
  append?: boolean;
  /** Aborts the transfer. */
  signal?: AbortSignal;
}

const utf8 = new TextEncoder();
const PARALLEL_READS = 4;
const PARALLEL_WRITES = 4;

/** The guest's file system. */
export class SandboxFs {
  readonly #client: ControlClient;
  readonly #chunk: number;
  readonly #watchers: Map<string, (ev: SandboxFsEvent) => void>;

  /** @internal Use `sandbox.fs`. */
  constructor(
    client: ControlClient,
    options: { chunkBytes?: number; watchers: Map<string, (ev: SandboxFsEvent) => void> },
  ) {
    this.#client = client;
    this.#chunk = options.chunkBytes ?? Limits.MAX_CHUNK_BYTES;
    this.#watchers = options.watchers;
  }

  #call<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<T> {
    return sdkRequest<T>(this.#client, method, { params, ...(signal ? { signal } : {}) });
  }

  /** Reads a whole file (in chunks, a few in flight). */
  async readFile(path: string, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const part of this.#chunks(path, options.signal)) parts.push(part);
    return parts.length === 1 ? parts[0]! : concatBytes(parts);
  }

  /** The file's bytes as a stream, read in chunks of up to 4 MiB (any size). */
  readFileStream(path: string, options: { signal?: AbortSignal } = {}): ReadableStream<Uint8Array> {
    return ReadableStream.from(this.#chunks(path, options.signal));
  }

  async *#chunks(path: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    type R = { content: string; eof: boolean };
    const inFlight: Promise<R>[] = [];
    let next = 0;
    const issue = () => {
      const p = this.#call<R>("read_file", { path, offset: next, length: this.#chunk }, signal);
      p.catch(() => {});
      inFlight.push(p);
      next += this.#chunk;
    };
    issue();
    while (inFlight.length > 0) {
      const r = await inFlight.shift()!;
      if (!r.eof) { while (inFlight.length < PARALLEL_READS) issue(); }
      const bytes = Uint8Array.fromBase64(r.content);
      if (bytes.length > 0) yield bytes;
      if (r.eof) break;
    }
  }

  /** Reads a file as UTF-8. */
  async readTextFile(path: string, options: { signal?: AbortSignal } = {}): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path, options));
  }

  /** Writes a file from bytes or a stream, in chunks, in order. */
  async writeFile(
    path: string,
    data: Uint8Array | ReadableStream<Uint8Array>,
    options: WriteFileOptions = {},
  ): Promise<void> {
    let offset = 0;
    if (options.append) {
      try {
        offset = (await this.stat(path)).size;
      } catch (err) {
        if ((err as { code?: string }).code !== "ENOENT") throw err;
      }
    }
    // Chunks go at explicit offsets, so a few can be in flight at once; the first one (which
    // truncates) is confirmed before the others are sent.
    let first = true;
    const inFlight = new Set<Promise<unknown>>();
    let failed: unknown = null;
    const send = async (piece: Uint8Array) => {
      const params: Record<string, unknown> = {
        path,
        offset,
        content: piece,
        truncate: first && !options.append,
      };
      if (options.mode !== undefined) params.mode = options.mode;
      offset += piece.length;
      if (first) {
        first = false;
        await this.#call("write_file", params, options.signal);
        return;
      }
      const p = this.#call("write_file", params, options.signal).catch((err) => {
        failed ??= err;
      });
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      while (inFlight.size >= PARALLEL_WRITES) await Promise.race(inFlight);
      if (failed) throw failed;
    };
    if (data instanceof Uint8Array) {
      for (let o = 0; o < data.length; o += this.#chunk) {
        await send(data.subarray(o, o + this.#chunk));
      }
    } else {
      let buf: Uint8Array[] = [];
      let n = 0;
      for await (const c of data) {
        buf.push(c);
        n += c.length;
        while (n >= this.#chunk) {
          const all = concatBytes(buf);
          await send(all.subarray(0, this.#chunk));
          buf = [all.subarray(this.#chunk)];
          n = buf[0]!.length;
        }
      }
      if (n > 0) await send(concatBytes(buf));
    }
    await Promise.all(inFlight);
    if (failed) throw failed;
    if (first) await send(new Uint8Array()); // empty file
  }

  /** Writes a file as UTF-8. */
  writeTextFile(path: string, text: string, options: WriteFileOptions = {}): Promise<void> {
    return this.writeFile(path, utf8.encode(text), options);
  }

  /** Lists a directory. */
  async *readDir(path: string): AsyncGenerator<SandboxDirEntry> {
    const r = await this.#call<{ entries: Array<{ name: string; type: string; size: number }> }>(
      "read_dir",
      { path },
    );
    for (const e of r.entries) {
      yield {
        name: e.name,
        isFile: e.type === "file",
        isDirectory: e.type === "dir",
        isSymlink: e.type === "symlink",
        size: e.size,
      };
    }
  }

  /** Reads metadata (follows symlinks). */
  stat(path: string): Promise<SandboxFileInfo> {
    return this.#stat(path, false);
  }

  /** Reads metadata of a link itself. */
  lstat(path: string): Promise<SandboxFileInfo> {
    return this.#stat(path, true);
  }

  async #stat(path: string, lstat: boolean): Promise<SandboxFileInfo> {
    const s = await this.#call<{
      size: number;
      mode: number;
      mtime_ms: number | null;
      is_dir: boolean;
      is_file: boolean;
      is_symlink: boolean;
    }>("stat", { path, lstat });
    return {
      isFile: s.is_file,
      isDirectory: s.is_dir,
      isSymlink: s.is_symlink,
      size: s.size,
      mtime: s.mtime_ms ? new Date(s.mtime_ms) : null,
      mode: s.mode,
    };
  }

  /** True when the path exists. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.lstat(path);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT") return false;
      throw err;
    }
  }

  /** Creates a directory (`recursive`: parents too, no error if it exists). */
  async mkdir(path: string, options: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    const params: Record<string, unknown> = { path, recursive: options.recursive ?? false };
    if (options.mode !== undefined) params.mode = options.mode;
    await this.#call("mkdir", params);
  }

  /** Removes a file or directory (`recursive` for a tree). */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#call("remove", { path, recursive: options.recursive ?? false });
  }

  /** Moves `oldPath` to `newPath` in the guest (replacing a file there). */
  async rename(oldPath: string, newPath: string): Promise<void> {
    await this.#call("rename", { old_path: oldPath, new_path: newPath });
  }

  /** Copies a file (or a tree with `recursive`). */
  async copy(src: string, dst: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#call("copy", { src, dst, recursive: options.recursive ?? false });
  }

  /** Changes permission bits. */
  async chmod(path: string, mode: number): Promise<void> {
    await this.#call("chmod", { path, mode });
  }

  /** Watches a path; events flow once this resolves. */
  async watch(path: string, options: { recursive?: boolean } = {}): Promise<SandboxFsWatcher> {
    const queue: SandboxFsEvent[] = [];
    let wake: (() => void) | null = null;
    let closed = false;
    const { watch_id: id } = await this.#call<{ watch_id: string }>("watch", {
      path,
      recursive: options.recursive ?? true,
    });
    this.#watchers.set(id, (ev) => {
      if (queue.length < 10_000) queue.push(ev);
      wake?.();
    });
    const close = async () => {
      if (closed) return;
      closed = true;
      this.#watchers.delete(id);
      wake?.();
      await this.#call("unwatch", { watch_id: id }).catch(() => {});
    };
    async function* iterate(): AsyncGenerator<SandboxFsEvent> {
      while (true) {
        while (queue.length > 0) yield queue.shift()!;
        if (closed) return;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
    }
    return {
      id,
      close,
      [Symbol.asyncIterator]: iterate,
      [Symbol.asyncDispose]: close,
    };
  }
}
