/**
 * Host tool checks for the CLI: turns missing programs into one actionable line, or installs
 * them (`--install-deps`, root on Debian/Ubuntu) with apt's output shown.
 *
 * @module
 */

import {
  ASSET_TOOLS,
  AssetError,
  findMissingTools,
  foreignAssetTools,
  type GuestArch,
  hostArch,
  installPackages,
  missingToolsError,
  vmTools,
} from "../assets/mod.ts";
import { UserError } from "./errors.ts";

/** Options of {@linkcode ensureHostDeps}. */
export interface HostDepsOptions {
  /** Install what is missing instead of failing. */
  installDeps?: boolean;
  /** Also require the asset build tools (for `shuru init`), not only QEMU. */
  forAssets?: boolean;
  /** The guest architecture (default: the host's). */
  arch?: GuestArch;
  /** Where apt's output goes (default: stderr). */
  onOutput?: (line: string) => void;
}

/** Ensures the host programs are present; throws {@linkcode UserError} naming the fix. */
export async function ensureHostDeps(options: HostDepsOptions = {}): Promise<void> {
  const arch = options.arch ?? hostArch();
  const foreign = arch === hostArch() ? [] : foreignAssetTools(arch);
  const tools = options.forAssets
    ? [...ASSET_TOOLS, ...vmTools(arch), ...foreign]
    : [...vmTools(arch)];
  const path = Deno.env.get("PATH") ?? "";
  const missing = await findMissingTools(tools, path);
  if (missing.length === 0) return;
  if (!options.installDeps) throw asUserError(missingToolsError(missing));
  const packages = [...new Set(missing.map((m) => m.tool.package))];
  const out = options.onOutput ?? ((line: string) => console.error(line));
  out(`shuru: installing ${packages.join(" ")} (apt-get)`);
  try {
    await installPackages(packages, { onOutput: out });
  } catch (err) {
    throw asUserError(err);
  }
  const still = await findMissingTools(tools, path);
  if (still.length > 0) throw asUserError(missingToolsError(still));
}

/** Converts asset errors into CLI errors (one line, exit code 2); rethrows anything else. */
export function asUserError(err: unknown): unknown {
  if (err instanceof AssetError) return new UserError(err.message, { cause: err });
  return err;
}
