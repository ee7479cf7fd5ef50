/**
 * Where shuru keeps its data: checkpoints, chunks, guest assets and instance folders.
 *
 * `$SHURU_HOME`, else `$XDG_DATA_HOME/shuru`, else `~/.local/share/shuru`.
 *
 * The data home is private to its owner ({@linkcode makeHomePrivate}): checkpoints hold whatever
 * a guest wrote to its disk, and instance folders hold the sockets that drive a guest.
 *
 * @module
 */

import { dirname, join, relative } from "node:path";
import { HostError } from "./errors.ts";

/** Returns the data home folder (not created). */
export function dataHome(): string {
  const explicit = Deno.env.get("SHURU_HOME");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_DATA_HOME");
  if (xdg) return join(xdg, "shuru");
  const home = Deno.env.get("HOME");
  if (!home) {
    throw new HostError("no_data_home", "Cannot find the data home: set SHURU_HOME or HOME");
  }
  return join(home, ".local", "share", "shuru");
}

/** The standard folders under the data home. */
export interface HomeLayout {
  /** The data home itself. */
  root: string;
  /** Content-addressed block store (chunks and checkpoints). */
  store: string;
  /** Built guest assets (kernel, initramfs, rootfs). */
  assets: string;
  /** One folder per running VM instance (a named sandbox's is named after it). */
  instances: string;
  /** The registry of named sandboxes: a record and a log per sandbox. */
  sandboxes: string;
  /** OCI images converted to root filesystems, and their pulled layers (`--image`). */
  images: string;
}

/** File name of a named sandbox's control socket in its instance folder. */
export const CONTROL_SOCKET_NAME = "control.sock";

/**
 * Returns the layout of the data home `root` (default: {@linkcode dataHome}).
 *
 * `$SHURU_ASSETS` moves the guest assets elsewhere (tests share one built copy while each
 * uses its own store); it applies only when `root` is not given.
 */
export function homeLayout(root?: string): HomeLayout {
  const assets = root === undefined ? Deno.env.get("SHURU_ASSETS") : undefined;
  root ??= dataHome();
  return {
    root,
    store: join(root, "store"),
    assets: assets || join(root, "assets"),
    instances: join(root, "instances"),
    sandboxes: join(root, "sandboxes"),
    images: join(root, "images"),
  };
}

/** The control socket of named sandbox `name` in the data home `layout`. */
export function sandboxControlSocket(layout: HomeLayout, name: string): string {
  return join(layout.instances, name, CONTROL_SOCKET_NAME);
}

/** Mode of the data home and its folders: the owner only. */
export const PRIVATE_DIR_MODE = 0o700;

/** Options of {@linkcode makeHomePrivate}. */
export interface MakeHomePrivateOptions {
  /** Called once with a one-line notice when an existing folder had to be tightened. */
  onNotice?: (line: string) => void;
}

/**
 * Creates the data home and its folders (store, instances, sandboxes, and assets when they live
 * under the home) with mode 0700, and tightens any of them that other users could read or
 * enter, saying so once through `onNotice`. Files inside need no change: no other user can
 * reach them through a private folder, and new ones are created owner-only. A home that is a
 * shared folder by design (sticky or writable by all, like `/tmp`) is never changed: the notice
 * then says how to give shuru a folder of its own.
 *
 * @returns the folders whose mode was tightened.
 */
export async function makeHomePrivate(
  layout: HomeLayout,
  options: MakeHomePrivateOptions = {},
): Promise<string[]> {
  const dirs = [layout.root, layout.store, layout.instances, layout.sandboxes, layout.images];
  const rel = relative(layout.root, layout.assets);
  if (rel !== "" && !rel.startsWith("..") && !rel.startsWith("/")) dirs.push(layout.assets);
  const tightened: { dir: string; was: number }[] = [];
  for (const dir of dirs) {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(dir);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (!info) {
      // The home's parents (~/.local/share) get the usual mode; `mode` applies to every folder
      // a recursive mkdir creates.
      if (dir === layout.root) await Deno.mkdir(dirname(dir), { recursive: true });
      await Deno.mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
      continue;
    }
    const mode = (info.mode ?? 0) & 0o7777;
    if (!info.isDirectory || (mode & 0o077) === 0) continue;
    if ((mode & 0o1002) !== 0) {
      options.onNotice?.(
        `shuru: the data home ${dir} is a shared folder (mode ${octal(mode)}), readable by ` +
          "other users; set SHURU_HOME to a folder of shuru's own",
      );
      continue;
    }
    await Deno.chmod(dir, mode & ~0o077);
    tightened.push({ dir, was: mode });
  }
  if (tightened.length > 0) {
    const list = tightened.map((t) => `${t.dir} (was ${octal(t.was)})`);
    options.onNotice?.(
      `shuru: made the data home private to its owner (mode 0700): ${list.join(", ")}`,
    );
  }
  return tightened.map((t) => t.dir);
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}
