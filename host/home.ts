/**
 * Where shuru keeps its data: checkpoints, chunks, guest assets and instance folders.
 *
 * `$SHURU_HOME`, else `$XDG_DATA_HOME/shuru`, else `~/.local/share/shuru`.
 *
 * @module
 */

import { join } from "node:path";
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
  };
}

/** The control socket of named sandbox `name` in the data home `layout`. */
export function sandboxControlSocket(layout: HomeLayout, name: string): string {
  return join(layout.instances, name, CONTROL_SOCKET_NAME);
}
