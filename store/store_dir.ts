/**
 * The store's folder and what every part of the store shares about it: the layout, the store
 * lock, checkpoint names and paths, manifest reads and atomic writes.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { nameProblem } from "../host/mod.ts";
import { fsyncDir, STORE_DIR_MODE, STORE_FILE_MODE } from "./chunk_store.ts";
import { StoreError } from "./errors.ts";
import { decodeManifest } from "./manifest.ts";

/** Throws `invalid_name` unless `name` is a safe checkpoint name (host/names.ts). */
export function validateName(name: string): void {
  const problem = nameProblem("checkpoint", name);
  if (problem) throw new StoreError("invalid_name", problem);
}

/** The folder of a store (see store.ts for its layout). */
export class StoreDir {
  /** The folder. */
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  /** Creates the subfolders. */
  async create(): Promise<void> {
    for (const sub of ["chunks", "checkpoints", "bases", "leases", "memory", "tmp"]) {
      await Deno.mkdir(join(this.path, sub), { recursive: true, mode: STORE_DIR_MODE });
    }
  }

  /** A path below the store folder. */
  join(...parts: string[]): string {
    return join(this.path, ...parts);
  }

  /** The manifest path of checkpoint `name`. */
  checkpointPath(name: string): string {
    return join(this.path, "checkpoints", `${name}.idx`);
  }

  /** Takes the store lock: shared for saves and opens, exclusive for gc. */
  async lock(exclusive: boolean): Promise<Deno.FsFile> {
    const file = await Deno.open(join(this.path, "lock"), {
      read: true,
      write: true,
      create: true,
      mode: STORE_FILE_MODE,
    });
    try {
      await file.lock(exclusive);
    } catch (err) {
      file.close();
      throw err;
    }
    return file;
  }

  /** The checkpoint names, sorted. */
  async names(): Promise<string[]> {
    const names: string[] = [];
    for await (const e of Deno.readDir(join(this.path, "checkpoints"))) {
      if (e.isFile && e.name.endsWith(".idx")) {
        const name = e.name.slice(0, -4);
        if (!nameProblem("checkpoint", name)) names.push(name);
      }
    }
    return names.sort();
  }

  /** The error for a checkpoint that does not exist, naming those that do. */
  async notFound(name: string, action: string): Promise<StoreError> {
    const names = await this.names();
    return new StoreError(
      "not_found",
      `Cannot ${action} checkpoint "${name}": no such checkpoint (existing: ${
        names.length ? names.join(", ") : "none"
      })`,
    );
  }

  /** Reads and validates a manifest file. */
  async readManifest(path: string): Promise<ReturnType<typeof decodeManifest>> {
    return decodeManifest(await Deno.readFile(path));
  }

  /** The manifests in `subs` (e.g. `bases`, `leases`): the roots besides checkpoints. */
  async rootFiles(subs: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const sub of subs) {
      for await (const e of Deno.readDir(join(this.path, sub))) {
        if (e.isFile && e.name.endsWith(".idx")) out.push(join(this.path, sub, e.name));
      }
    }
    return out;
  }

  /** Writes `bytes` to `path` atomically and durably; refuses to replace unless `overwrite`. */
  async writeAtomic(path: string, bytes: Uint8Array, overwrite: boolean): Promise<void> {
    const tmp = join(this.path, "tmp", `${basename(path)}.${crypto.randomUUID()}.tmp`);
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: STORE_FILE_MODE });
      try {
        let off = 0;
        while (off < bytes.length) off += await file.write(bytes.subarray(off));
        await file.sync();
      } finally {
        file.close();
      }
      if (overwrite) {
        await Deno.rename(tmp, path);
      } else {
        // link() fails if the name exists, so two saves racing for one name cannot both win.
        await Deno.link(tmp, path);
      }
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
    await fsyncDir(dirname(path));
  }
}
