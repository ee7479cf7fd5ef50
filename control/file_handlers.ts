/**
 * The file methods of the control protocol: `watch`, `unwatch`, `read_file`, `write_file`,
 * `mkdir`, `read_dir`, `stat`, `remove`, `rename`, `copy`, `chmod`.
 *
 * @module
 */

import type { BackendWatch } from "./backend.ts";
import { serverError, toRpcError } from "./errors.ts";
import { abortable, type HandledMethod, type Handler } from "./handler.ts";

/** The file methods, by name. */
export const FILE_HANDLERS = {
  async watch(session, p) {
    const path = p.path("path");
    const recursive = p.bool("recursive", true);
    if (session.watches.size >= session.server.limits.MAX_WATCHES) {
      throw serverError(
        "TOO_MANY",
        `Cannot watch ${path}: this connection has ${session.watches.size} watches (the limit)`,
      );
    }
    let watch: BackendWatch;
    try {
      watch = await session.server.backend.watch(path, { recursive });
    } catch (err) {
      throw toRpcError(err, `watch ${path}`);
    }
    const watchId = session.server.nextWatchId();
    session.watches.set(watchId, watch);
    return {
      result: { watch_id: watchId },
      afterReply: () => {
        void (async () => {
          try {
            for await (const ev of watch) {
              session.notify("file_change", { path: ev.path, event: ev.event, watch_id: watchId });
              await session.ready();
            }
          } catch {
            // The watch ended with the agent connection.
          }
          session.watches.delete(watchId);
        })();
      },
    };
  },

  async unwatch(session, p) {
    const watchId = p.string("watch_id", { maxLength: 64 });
    const watch = session.watches.get(watchId);
    if (!watch) throw serverError("NO_SUCH_WATCH", `Cannot unwatch ${watchId}: no such watch`);
    session.watches.delete(watchId);
    await watch.close();
    return { result: {} };
  },

  async read_file(session, p, ctx) {
    const limits = session.server.limits;
    const path = p.path("path");
    const offset = p.optInt("offset", { min: 0 }) ?? 0;
    const length = p.optInt("length", { min: 0, max: limits.MAX_CHUNK_BYTES });
    const want = length ?? limits.MAX_WHOLE_FILE_BYTES + 1;
    let data: Uint8Array;
    try {
      data = await abortable(
        session.server.backend.readFile(path, { offset, length: want }),
        ctx.signal,
      );
    } catch (err) {
      throw toRpcError(err, `read ${path}`);
    }
    if (length === undefined && data.length > limits.MAX_WHOLE_FILE_BYTES) {
      throw serverError(
        "EFBIG",
        `Cannot read ${path} in one message: it is larger than ${limits.MAX_WHOLE_FILE_BYTES} bytes; ` +
          `read it in chunks with offset and length`,
      );
    }
    return {
      result: {
        content: data,
        offset,
        bytes: data.length,
        eof: data.length < want,
      },
    };
  },

  async write_file(session, p, ctx) {
    const limits = session.server.limits;
    const path = p.path("path");
    const hasOffset = p.has("offset");
    const offset = p.optInt("offset", { min: 0 }) ?? 0;
    // Without offset the whole file is replaced, as in the reference (the Rust shuru for
    // macOS); chunks are capped.
    const maxBytes = hasOffset ? limits.MAX_CHUNK_BYTES : limits.MAX_LINE_BYTES;
    const data = p.base64("content", { maxBytes });
    const truncate = p.bool("truncate", !hasOffset);
    const mode = p.optInt("mode", { min: 0, max: 0o7777 });
    try {
      await abortable(
        session.server.backend.writeFile(path, data, {
          offset,
          truncate,
          ...(mode !== undefined ? { mode } : {}),
        }),
        ctx.signal,
      );
    } catch (err) {
      throw toRpcError(err, `write ${path}`);
    }
    return { result: { bytes: data.length } };
  },

  async mkdir(session, p) {
    const path = p.path("path");
    const mode = p.optInt("mode", { min: 0, max: 0o7777 });
    await session.server.backend
      .mkdir(path, {
        recursive: p.bool("recursive", true),
        ...(mode !== undefined ? { mode } : {}),
      })
      .catch((err) => {
        throw toRpcError(err, `create directory ${path}`);
      });
    return { result: {} };
  },

  async read_dir(session, p) {
    const path = p.path("path");
    const entries = await session.server.backend.readDir(path).catch((err) => {
      throw toRpcError(err, `list ${path}`);
    });
    const max = session.server.limits.MAX_DIR_ENTRIES;
    return {
      result: {
        entries: entries.slice(0, max).map((e) => ({ name: e.name, type: e.type, size: e.size })),
        truncated: entries.length > max,
      },
    };
  },

  async stat(session, p) {
    const path = p.path("path");
    const s = await session.server.backend.stat(path, { lstat: p.bool("lstat", false) }).catch(
      (err) => {
        throw toRpcError(err, `stat ${path}`);
      },
    );
    return {
      result: {
        size: s.size,
        mode: s.mode,
        mtime: Math.floor(s.mtimeMs / 1000),
        mtime_ms: s.mtimeMs,
        is_dir: s.isDir,
        is_file: s.isFile,
        is_symlink: s.isSymlink,
      },
    };
  },

  async remove(session, p) {
    const path = p.path("path");
    await session.server.backend.remove(path, { recursive: p.bool("recursive", false) }).catch(
      (err) => {
        throw toRpcError(err, `remove ${path}`);
      },
    );
    return { result: {} };
  },

  async rename(session, p) {
    const oldPath = p.path("old_path");
    const newPath = p.path("new_path");
    await session.server.backend.rename(oldPath, newPath).catch((err) => {
      throw toRpcError(err, `rename ${oldPath}`);
    });
    return { result: {} };
  },

  async copy(session, p) {
    const src = p.path("src");
    const dst = p.path("dst");
    await session.server.backend.copy(src, dst, { recursive: p.bool("recursive", false) }).catch(
      (err) => {
        throw toRpcError(err, `copy ${src}`);
      },
    );
    return { result: {} };
  },

  async chmod(session, p) {
    const path = p.path("path");
    const mode = p.int("mode", { min: 0, max: 0o7777 });
    await session.server.backend.chmod(path, mode).catch((err) => {
      throw toRpcError(err, `chmod ${path}`);
    });
    return { result: {} };
  },
} satisfies Partial<Record<HandledMethod, Handler>>;
