/**
 * The control socket: a Unix socket of mode 0600 serving a {@linkcode ControlServer}.
 *
 * The socket is bound inside a fresh private (0700) directory next to the target, set to 0600,
 * then renamed into place, so there is no moment at which another user could connect to it.
 *
 * @module
 */

import { dirname, join } from "node:path";
import type { ControlServer } from "./server.ts";

/** A listening control socket. */
export interface ControlSocket extends AsyncDisposable {
  /** The socket file (removed by `close`). */
  readonly path: string;
  /** Stops accepting, closes the sessions it accepted and removes the socket file. */
  close(): Promise<void>;
}

/** Options of {@linkcode listenControlSocket}. */
export interface ListenControlSocketOptions {
  /** Replace an existing file at the path (a stale socket from a crashed supervisor). */
  replace?: boolean;
}

/** Listens on `path` (mode 0600) and serves every connection with `server`. */
export async function listenControlSocket(
  server: ControlServer,
  path: string,
  options: ListenControlSocketOptions = {},
): Promise<ControlSocket> {
  if (options.replace) {
    await Deno.remove(path).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
  const privateDir = await Deno.makeTempDir({ dir: dirname(path), prefix: ".control-" });
  let listener: Deno.UnixListener;
  try {
    await Deno.chmod(privateDir, 0o700);
    const tmpPath = join(privateDir, "s");
    listener = Deno.listen({ transport: "unix", path: tmpPath });
    try {
      await Deno.chmod(tmpPath, 0o600);
      await Deno.link(tmpPath, path);
    } catch (err) {
      listener.close();
      throw new Error(`Cannot create control socket ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  } finally {
    await Deno.remove(privateDir, { recursive: true }).catch(() => {});
  }
  const conns = new Set<Deno.UnixConn>();
  const sessions = new Set<Promise<void>>();
  const acceptLoop = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const session = server.serve(conn.readable, conn.writable);
        const done = session.done.finally(() => {
          conns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        });
        sessions.add(done);
        void done.finally(() => sessions.delete(done));
      }
    } catch {
      // Listener closed.
    }
  })();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    listener.close();
    await acceptLoop;
    for (const c of conns) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await Promise.allSettled([...sessions]);
    await Deno.remove(path).catch(() => {});
  };
  return { path, close, [Symbol.asyncDispose]: close };
}
