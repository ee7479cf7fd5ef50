/**
 * What an OCI image's config changes for the processes a sandbox runs: `Env` under the
 * request's own variables, `WorkingDir` as the default working folder, `User` by running the
 * command through the tools disk's `setpriv` (the image need not have one), and
 * `Entrypoint` + `Cmd` as the command when none is given. A sandbox started from a checkpoint of
 * an image keeps these: they are stored in the checkpoint's manifest (`ImageMeta.settings`).
 *
 * Only user commands get these defaults; shuru's own guest steps (the freeze before a live
 * checkpoint) run as root.
 *
 * @module
 */

import type { SpawnDefaults } from "../agent/mod.ts";
import { toolsCommand } from "../assets/mod.ts";
import type { ImageDefaults, PreparedImage } from "../image/mod.ts";
import type { ImageMeta } from "../store/mod.ts";

/**
 * What a sandbox's image gives its user commands (`applySpawnDefaults` of agent/ applies it),
 * and what listings show of it.
 */
export interface RunDefaults extends SpawnDefaults {
  /** The command when none is given (`Entrypoint` + `Cmd`); empty: the front end's default. */
  command: string[];
  /** `ExposedPorts` of the image (`8080/tcp`), for listings. */
  exposedPorts: string[];
  /** The image reference, for listings. */
  image?: string;
}

/** No image: nothing changes. */
export const NO_DEFAULTS: RunDefaults = {
  env: {},
  argvPrefix: [],
  command: [],
  exposedPorts: [],
};

/** The checkpoint metadata of a converted image. */
export function imageMeta(image: PreparedImage): ImageMeta {
  return {
    ref: image.reference,
    config: image.configDigest,
    settings: image.defaults as unknown as Record<string, unknown>,
  };
}

/** Reads back {@linkcode ImageDefaults} stored in a checkpoint (unknown shapes give none). */
export function defaultsFromMeta(meta: ImageMeta): ImageDefaults | undefined {
  const s = meta.settings;
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === "string");
  if (!strings(s.env) || !strings(s.command) || !strings(s.exposedPorts)) return undefined;
  if (typeof s.workingDir !== "string") return undefined;
  const u = s.user as Record<string, unknown> | undefined;
  const userOk = u === undefined || (
    typeof u.uid === "number" && typeof u.gid === "number" && Array.isArray(u.groups) &&
    u.groups.every((g) => typeof g === "number") && typeof u.home === "string" &&
    typeof u.spec === "string"
  );
  return userOk ? s as unknown as ImageDefaults : undefined;
}

/** The spawn defaults of an image's settings. */
export function spawnDefaults(defaults: ImageDefaults, image: string): RunDefaults {
  const env: Record<string, string> = {};
  for (const kv of defaults.env) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const argvPrefix: string[] = [];
  const user = defaults.user;
  if (user) {
    if (env.HOME === undefined) env.HOME = user.home;
    argvPrefix.push(
      ...toolsCommand("setpriv"),
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      user.groups.length > 0 ? `--groups=${user.groups.join(",")}` : "--clear-groups",
      "--",
    );
  }
  return {
    env,
    ...(defaults.workingDir !== "" ? { cwd: defaults.workingDir } : {}),
    argvPrefix,
    command: defaults.command,
    exposedPorts: defaults.exposedPorts,
    image,
  };
}
