/**
 * Host tool checks for the CLI: turns missing programs into one actionable line, or installs
 * them (`--install-deps`, root on Debian/Ubuntu) with apt's output shown.
 *
 * @module
 */

import {
  ASSET_TOOLS,
  findMissingTools,
  installPackages,
  missingToolsError,
  VM_TOOLS,
} from "../host/mod.ts";

/** Options of {@linkcode ensureHostDeps}. */
export interface HostDepsOptions {
  /** Install what is missing instead of failing. */
  installDeps?: boolean;
  /** Also require the asset build tools (for `shuru init`), not only QEMU. */
  forAssets?: boolean;
  /** Where apt's output goes (default: stderr). */
  onOutput?: (line: string) => void;
}

/** Ensures the host programs are present; throws `HostError` naming the fix. */
export async function ensureHostDeps(options: HostDepsOptions = {}): Promise<void> {
  const tools = options.forAssets ? [...ASSET_TOOLS, ...VM_TOOLS] : [...VM_TOOLS];
  const path = Deno.env.get("PATH") ?? "";
  const missing = await findMissingTools(tools, path);
  if (missing.length === 0) return;
  if (!options.installDeps) throw missingToolsError(missing);
  const packages = [...new Set(missing.map((m) => m.tool.package))];
  const out = options.onOutput ?? ((line: string) => console.error(line));
  out(`shuru: installing ${packages.join(" ")} (apt-get)`);
  await installPackages(packages, { onOutput: out });
  const still = await findMissingTools(tools, path);
  if (still.length > 0) throw missingToolsError(still);
}
