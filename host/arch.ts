/**
 * Guest CPU architectures by name, and the host's: the few facts every layer needs (the spec
 * checks `--arch`, the VM backend picks a machine, the asset build picks packages). What each
 * layer knows about an architecture lives with it: the build's in `assets/arch.ts`, the QEMU
 * machine's in `vm/machine.ts`.
 *
 * @module
 */

import { HostError } from "./errors.ts";

/** A guest CPU architecture. Names follow `uname -m`, except `arm64` (Debian's and Apple's). */
export type GuestArch = "x86_64" | "arm64";

/** Every architecture shuru can build and boot guests for. */
export const GUEST_ARCHES: readonly GuestArch[] = ["x86_64", "arm64"];

/** The architecture of the host (`x86_64` or `arm64`); throws on any other. */
export function hostArch(): GuestArch {
  return archFromUname(Deno.build.arch);
}

/** Maps a `uname -m` style name (`x86_64`, `aarch64`) to a {@linkcode GuestArch}. */
export function archFromUname(machine: string): GuestArch {
  if (machine === "x86_64") return "x86_64";
  if (machine === "aarch64" || machine === "arm64") return "arm64";
  throw new HostError(
    "unsupported_arch",
    `Cannot run guests on a ${machine} host: shuru supports x86_64 and arm64`,
  );
}

/**
 * Parses an architecture name given by a user (`--arch`): `x86_64` (or `amd64`, `x64`),
 * `arm64` (or `aarch64`); `undefined` for anything else.
 */
export function parseArch(value: string): GuestArch | undefined {
  const v = value.trim().toLowerCase();
  if (v === "x86_64" || v === "amd64" || v === "x64") return "x86_64";
  if (v === "arm64" || v === "aarch64") return "arm64";
  return undefined;
}

/** The OCI platform architecture of `arch` (`amd64`, `arm64`), as image indexes name it. */
export function ociArch(arch: GuestArch): string {
  return arch === "x86_64" ? "amd64" : "arm64";
}
