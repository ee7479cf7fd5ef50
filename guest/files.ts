/**
 * File operations of the guest agent over Deno's file APIs: streamed reads and writes with no size
 * limit (the caller's pace is the backpressure; one chunk in memory at a time), and the small
 * operations (mkdir, read_dir, stat, remove, rename, copy, chmod, watch).
 *
 * Failures are thrown as `AgentError`s from `proto/errors.ts` with the wire code of the cause and
 * a message of the form "Cannot <action> <path>: <reason>", ready to travel in a RESET frame.
 *
 * @module
 */

import {
  AgentError,
  AgentIsADirectoryError,
  type DirEntry,
  errorCodeOf,
  type FileInfo,
  type FileType,
  type WatchEvent,
} from "../proto/mod.ts";

/** Bytes per chunk of a streamed read. */
export const READ_CHUNK = 256 * 1024;

/** Turns any error from a file call into an AgentError naming the action and path. */
export function fileError(action: string, path: string, err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  const raw = err instanceof Error ? err.message : String(err);
  // Deno: "No such file or directory (os error 2): open '/x'" -> "no such file or directory".
  const reason = raw.replace(/ \(os error \d+\).*$/s, "");
  const lower = reason.length > 0 ? reason[0]!.toLowerCase() + reason.slice(1) : "unknown error";
  return new AgentError(errorCodeOf(err), `Cannot ${action} ${path}: ${lower}`, { cause: err });
}

async function attempt<T>(action: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fileError(action, path, e);
  }
}

/** A file being streamed out by {@link readFile}. */
export interface FileReadStream {
  /** The file's bytes from the requested offset; the file is closed at the end or on cancel. */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Bytes delivered so far (final once `readable` has ended). */
  bytesRead(): number;
}

/** Options for {@link readFile}. */
export interface ReadFileOptions {
  /** Start offset. @default 0 */
  offset?: number;
  /** Max bytes to read. @default to the end of the file */
  length?: number;
}

/**
 * Opens `path` for a streamed read. Errors opening it (missing, a directory, no permission) are
 * thrown here, before any byte is sent.
 */
export async function readFile(
  path: string,
  options: ReadFileOptions = {},
): Promise<FileReadStream> {
  const file = await attempt("read", path, () => Deno.open(path, { read: true }));
  let remaining = options.length ?? Number.POSITIVE_INFINITY;
  let total = 0;
  try {
    const info = await file.stat();
    if (info.isDirectory) throw new AgentIsADirectoryError(`Cannot read ${path}: is a directory`);
    if (options.offset) await file.seek(options.offset, Deno.SeekMode.Start);
  } catch (e) {
    file.close();
    throw fileError("read", path, e);
  }
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    file.close();
  };
  const readable = new ReadableStream<Uint8Array<ArrayBuffer>>({
    async pull(controller) {
      if (remaining <= 0) {
        close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(READ_CHUNK, remaining));
      let n: number | null;
      try {
        n = await file.read(buf);
      } catch (e) {
        close();
        throw fileError("read", path, e);
      }
      if (n === null) {
        close();
        controller.close();
        return;
      }
      remaining -= n;
      total += n;
      controller.enqueue(n === buf.length ? buf : buf.slice(0, n));
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
  return { readable, bytesRead: () => total };
}

/** Options for {@link writeFile}. */
export interface WriteFileOptions {
  /** Permission bits for a new file. @default 0o644 */
  mode?: number;
  /** Append instead of truncating. @default false */
  append?: boolean;
  /** Fail with already_exists if the file exists. @default false */
  createNew?: boolean;
  /** Write at this offset without truncating (pwrite); exclusive with `append`. */
  offset?: number;
}

/**
 * Writes everything `source` yields to `path`; returns the byte count once the last byte is
 * written and the file closed. The source is read one chunk at a time.
 */
export async function writeFile(
  path: string,
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  options: WriteFileOptions = {},
): Promise<number> {
  const file = await attempt("write", path, () =>
    Deno.open(path, {
      write: true,
      create: !options.createNew,
      createNew: options.createNew ?? false,
      truncate: !options.append && options.offset === undefined,
      append: options.append ?? false,
      mode: options.mode ?? 0o644,
    }));
  let total = 0;
  try {
    if (options.offset !== undefined) await file.seek(options.offset, Deno.SeekMode.Start);
    for await (const chunk of source) {
      let rest = chunk;
      while (rest.length > 0) {
        const n = await file.write(rest);
        rest = rest.subarray(n);
        total += n;
      }
    }
  } catch (e) {
    throw fileError("write", path, e);
  } finally {
    file.close();
  }
  return total;
}

/** Creates a directory (and its parents with `recursive`). */
export async function mkdir(
  path: string,
  options: { recursive?: boolean; mode?: number } = {},
): Promise<void> {
  await attempt(
    "create directory",
    path,
    () => Deno.mkdir(path, { recursive: options.recursive ?? false, mode: options.mode ?? 0o755 }),
  );
}

function typeOf(info: { isFile: boolean; isDirectory: boolean; isSymlink: boolean }): FileType {
  if (info.isSymlink) return "symlink";
  if (info.isFile) return "file";
  if (info.isDirectory) return "dir";
  return "other";
}

/** Lists a directory's entries (symlinks are reported as such, not followed). */
export async function* readDir(path: string): AsyncGenerator<DirEntry> {
  let iterator: AsyncIterator<Deno.DirEntry>;
  try {
    iterator = Deno.readDir(path)[Symbol.asyncIterator]();
  } catch (e) {
    throw fileError("list", path, e);
  }
  for (;;) {
    let next: IteratorResult<Deno.DirEntry>;
    try {
      next = await iterator.next();
    } catch (e) {
      throw fileError("list", path, e);
    }
    if (next.done) return;
    yield { name: next.value.name, type: typeOf(next.value) };
  }
}

/** Stats a path (`lstat`: the link itself). */
export async function stat(path: string, options: { lstat?: boolean } = {}): Promise<FileInfo> {
  const info = await attempt(
    "stat",
    path,
    () => options.lstat ? Deno.lstat(path) : Deno.stat(path),
  );
  return {
    type: typeOf(info),
    size: info.size,
    mode: (info.mode ?? 0) & 0o7777,
    mtime: info.mtime?.getTime() ?? null,
    uid: info.uid ?? 0,
    gid: info.gid ?? 0,
  };
}

/** Removes a file, link, or directory (non-empty only with `recursive`). */
export async function remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
  await attempt("remove", path, () => Deno.remove(path, { recursive: options.recursive ?? false }));
}

/** Renames `from` to `to` (replacing a file at `to`). */
export async function rename(from: string, to: string): Promise<void> {
  await attempt("rename", `${from} to ${to}`, () => Deno.rename(from, to));
}

/** Sets permission bits. */
export async function chmod(path: string, mode: number): Promise<void> {
  await attempt("chmod", path, () => Deno.chmod(path, mode));
}

/**
 * Copies a file to `to` (overwriting a file there), or with `recursive` a directory tree to a new
 * path `to` (which must not exist). Symlinks are copied as links; permission bits are kept.
 */
export async function copy(
  from: string,
  to: string,
  options: { recursive?: boolean } = {},
): Promise<void> {
  const what = `${from} to ${to}`;
  const info = await attempt("copy", what, () => Deno.lstat(from));
  if (info.isDirectory) {
    if (!options.recursive) {
      throw new AgentIsADirectoryError(
        `Cannot copy ${what}: source is a directory (use recursive)`,
      );
    }
    await attempt("copy", what, () => Deno.mkdir(to, { mode: (info.mode ?? 0o755) & 0o7777 }));
    await copyTree(from, to);
    return;
  }
  await attempt("copy", what, () => copyEntry(from, to, info));
}

async function copyEntry(from: string, to: string, info: Deno.FileInfo): Promise<void> {
  if (info.isSymlink) {
    await Deno.symlink(await Deno.readLink(from), to);
  } else if (info.isFile) {
    await Deno.copyFile(from, to);
  } else {
    throw new AgentError(
      "unsupported",
      `Cannot copy ${from}: not a regular file, link or directory`,
    );
  }
}

async function copyTree(from: string, to: string): Promise<void> {
  for await (const entry of readDir(from)) {
    const src = `${from}/${entry.name}`;
    const dst = `${to}/${entry.name}`;
    const info = await attempt("copy", src, () => Deno.lstat(src));
    if (info.isDirectory) {
      await attempt("copy", src, () => Deno.mkdir(dst, { mode: (info.mode ?? 0o755) & 0o7777 }));
      await copyTree(src, dst);
    } else {
      await attempt("copy", `${src} to ${dst}`, () => copyEntry(src, dst, info));
    }
  }
}

/** A running watch; see {@link watch}. */
export interface Watch {
  /** The events, until `signal` aborts (or the watch fails). */
  readonly events: AsyncIterable<WatchEvent>;
}

/**
 * Starts watching `path` (recursively by default) until `signal` aborts. The watch is active when
 * this returns, so changes made afterwards are seen. Deno's `access` events are dropped; `remove`
 * becomes `delete`. A rename inside the tree arrives as a `rename` event with both paths
 * (`[from, to]`); the kernel's half events (the old name alone, reported by Deno as a remove, and
 * the new name alone) are passed on as they come.
 *
 * @throws AgentError (e.g. `not_found`) when the watch cannot be set up.
 */
export function watch(
  path: string,
  options: { recursive?: boolean; signal?: AbortSignal } = {},
): Watch {
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(path, { recursive: options.recursive ?? true });
  } catch (e) {
    throw fileError("watch", path, e);
  }
  return { events: watchEvents(watcher, options.signal) };
}

async function* watchEvents(
  watcher: Deno.FsWatcher,
  signal: AbortSignal | undefined,
): AsyncGenerator<WatchEvent> {
  const stop = () => {
    try {
      watcher.close();
    } catch {
      // Already closed.
    }
  };
  signal?.addEventListener("abort", stop, { once: true });
  try {
    if (signal?.aborted) return;
    for await (const event of watcher) {
      const kind = event.kind === "remove"
        ? "delete"
        : event.kind === "create" || event.kind === "modify" || event.kind === "rename"
        ? event.kind
        : null;
      if (kind === null) continue;
      yield { kind, paths: event.paths.slice(0, 2) };
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    stop();
  }
}
