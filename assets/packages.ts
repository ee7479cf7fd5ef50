/**
 * Debian packages of a foreign architecture, fetched with the host's apt without touching the
 * host's package state: apt runs with a private state and cache folder under the assets cache
 * (`-o Dir::State=... -o APT::Architecture=arm64`), reads the host's sources and keyrings, and only
 * downloads (`apt-get download`); nothing is installed and `dpkg --add-architecture` is never
 * needed. The packages' files are then read with `dpkg-deb`.
 *
 * Which files were chosen is recorded in `selected.json`, so later runs (and the asset version)
 * find them offline; `refresh` (`shuru init --force`) asks apt again.
 *
 * @module
 */

import { basename, join } from "node:path";
import { AssetError } from "./errors.ts";
import { runTool } from "./run.ts";

/** Options of {@linkcode ForeignPackages}. */
export interface ForeignPackagesOptions {
  /** Debian architecture name, e.g. `arm64`. */
  debianArch: string;
  /** The cache folder for this architecture, e.g. `<assets>/cache/apt-arm64`. */
  dir: string;
}

/** A downloaded package file. */
export interface DebFile {
  /** Package name (the versioned one for a metapackage's dependency). */
  name: string;
  /** Absolute path of the `.deb`. */
  path: string;
  /** Its size in bytes. */
  size: number;
}

/** Progress lines of apt (for the build's detail display). */
export type LineSink = (line: string) => void;

interface Selected {
  [request: string]: { name: string; file: string; size: number };
}

/** A private apt for one foreign architecture. */
export class ForeignPackages {
  readonly #arch: string;
  readonly #dir: string;

  /** Uses (and creates on demand) `options.dir`. */
  constructor(options: ForeignPackagesOptions) {
    this.#arch = options.debianArch;
    this.#dir = options.dir;
  }

  /** apt's options that make it private and foreign. */
  aptOptions(): string[] {
    const d = this.#dir;
    return [
      "-o",
      `APT::Architecture=${this.#arch}`,
      "-o",
      `APT::Architectures=${this.#arch}`,
      "-o",
      `Dir::State=${join(d, "state")}`,
      "-o",
      `Dir::State::status=${join(d, "state", "status")}`,
      "-o",
      `Dir::Cache=${join(d, "cache")}`,
      "-o",
      "Acquire::Languages=none",
      // The folders are root's; apt's download sandbox user could not write them.
      "-o",
      "APT::Sandbox::User=root",
    ];
  }

  /**
   * The package files chosen for `requests` (package names; a `linux-image-*` metapackage stands
   * for the kernel package it depends on), as recorded; `undefined` when any is missing.
   */
  async recorded(requests: readonly string[]): Promise<DebFile[] | undefined> {
    const selected = await this.#readSelected();
    const out: DebFile[] = [];
    for (const r of requests) {
      const s = selected[r];
      if (!s) return undefined;
      const path = join(this.#dir, "debs", s.file);
      try {
        if ((await Deno.stat(path)).size !== s.size) return undefined;
      } catch {
        return undefined;
      }
      out.push({ name: s.name, path, size: s.size });
    }
    return out;
  }

  /**
   * Returns the package files for `requests`: the recorded ones unless `refresh`, else apt's
   * current candidates (after `apt-get update`), downloaded when not in the cache yet.
   *
   * @throws AssetError `download_failed` when apt cannot find or fetch a package.
   */
  async fetch(
    requests: readonly string[],
    options: { refresh?: boolean; onLine?: LineSink } = {},
  ): Promise<DebFile[]> {
    if (!options.refresh) {
      const have = await this.recorded(requests);
      if (have) return have;
    }
    const onLine = options.onLine ?? (() => {});
    for (const sub of ["state/lists/partial", "cache/archives/partial", "debs"]) {
      await Deno.mkdir(join(this.#dir, sub), { recursive: true });
    }
    const status = join(this.#dir, "state", "status");
    await Deno.writeTextFile(status, "", { append: true });
    await this.#apt("apt-get", ["update"], onLine);
    const selected = await this.#readSelected();
    const out: DebFile[] = [];
    for (const request of requests) {
      const name = await this.#concreteName(request);
      const { file, size } = await this.#uri(name);
      const path = join(this.#dir, "debs", file);
      const have = await Deno.stat(path).then((i) => i.size === size, () => false);
      if (!have) {
        onLine(`downloading ${name} (${(size / 1048576).toFixed(1)} MiB)`);
        await this.#apt("apt-get", ["download", name], onLine, join(this.#dir, "debs"));
      }
      const got = await Deno.stat(path).catch(() => undefined);
      if (!got || got.size !== size) {
        throw new AssetError(
          "download_failed",
          `Cannot download ${name} for ${this.#arch}: apt did not leave ${file} in ${
            join(this.#dir, "debs")
          }`,
        );
      }
      selected[request] = { name, file, size };
      out.push({ name, path, size });
    }
    const tmp = join(this.#dir, `selected.json.${Deno.pid}.tmp`);
    await Deno.writeTextFile(tmp, JSON.stringify(selected, null, 2) + "\n");
    await Deno.rename(tmp, join(this.#dir, "selected.json"));
    await this.#removeUnselected(selected);
    return out;
  }

  /** A kernel metapackage's versioned dependency; any other name as is. */
  async #concreteName(request: string): Promise<string> {
    if (!/^linux-image-[a-z0-9]+$/.test(request)) return request;
    const text = await this.#apt("apt-cache", ["depends", "--important", request]);
    const dep = /^\s*Depends:\s*(linux-image-\S+)$/m.exec(text)?.[1];
    if (!dep) {
      throw new AssetError(
        "download_failed",
        `Cannot find the kernel package ${request} depends on (${this.#arch}): ${text.trim()}`,
      );
    }
    return dep;
  }

  /** The file name and size apt would download for `name`. */
  async #uri(name: string): Promise<{ file: string; size: number }> {
    const text = await this.#apt("apt-get", ["download", "--print-uris", name]);
    // 'http://.../pool/main/b/busybox/busybox-static_1%3a1.35.0-4_arm64.deb' busybox-static_1%3a1.35.0-4_arm64.deb 822236 SHA256:...
    const m = /^'[^']+'\s+(\S+\.deb)\s+(\d+)\s/m.exec(text);
    if (!m) {
      throw new AssetError(
        "download_failed",
        `Cannot find package ${name} for ${this.#arch} in apt's sources: ${text.trim()}`,
      );
    }
    return { file: basename(m[1]!), size: Number(m[2]) };
  }

  async #apt(tool: string, args: string[], onLine?: LineSink, cwd?: string): Promise<string> {
    let rest = "";
    const out = await runTool(tool, [...this.aptOptions(), ...args], {
      env: { DEBIAN_FRONTEND: "noninteractive" },
      ...(cwd ? { cwd } : {}),
      ...(onLine
        ? {
          onStderr: (text: string) => {
            const lines = (rest + text).split("\n");
            rest = lines.pop() ?? "";
            for (const l of lines) if (l.trim()) onLine(l.trim());
          },
        }
        : {}),
    }).catch((err) => {
      throw new AssetError(
        "download_failed",
        `Cannot fetch ${this.#arch} packages with apt: ${(err as Error).message}`,
        { cause: err },
      );
    });
    const text = new TextDecoder().decode(out);
    if (onLine) { for (const l of text.split("\n")) if (l.trim()) onLine(l.trim()); }
    return text;
  }

  async #readSelected(): Promise<Selected> {
    try {
      const parsed = JSON.parse(await Deno.readTextFile(join(this.#dir, "selected.json")));
      return typeof parsed === "object" && parsed !== null ? parsed as Selected : {};
    } catch {
      return {};
    }
  }

  /** Removes package files no longer selected (older kernels after an update). */
  async #removeUnselected(selected: Selected): Promise<void> {
    const keep = new Set(Object.values(selected).map((s) => s.file));
    const dir = join(this.#dir, "debs");
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".deb") && !keep.has(e.name)) {
        await Deno.remove(join(dir, e.name)).catch(() => {});
      }
    }
  }
}

/** Unpacks the files of package `deb` under `dest` (`dpkg-deb -x`; no scripts run). */
export async function extractDeb(deb: string, dest: string): Promise<void> {
  await Deno.mkdir(dest, { recursive: true });
  await runTool("dpkg-deb", ["-x", deb, dest]);
}

/** Returns one file of package `deb`, e.g. `./bin/busybox`. */
export async function debMember(deb: string, member: string): Promise<Uint8Array> {
  const out = await runTool("sh", [
    "-c",
    'dpkg-deb --fsys-tarfile "$0" | tar -xO "$1"',
    deb,
    member,
  ]);
  if (out.length === 0) {
    throw new AssetError("command_failed", `Cannot read ${member} from ${deb}: empty or missing`);
  }
  return out;
}
