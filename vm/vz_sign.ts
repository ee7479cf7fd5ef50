/**
 * The entitlement Virtualization.framework requires: a process without
 * `com.apple.security.virtualization` in its code signature cannot create a VM. Deno's release
 * binary does not have it, so `shuru init` on macOS signs a *copy* of it, ad hoc (no Apple
 * developer identity needed), into the data home, and the `./shuru` launcher runs that copy.
 *
 * - No hardened runtime (`-o runtime` is left out): under it V8's JIT needs more entitlements.
 * - A fresh file is signed and then renamed over the old one: rewriting a signed binary in place
 *   can get the next process started from it killed by the kernel's code-signing cache.
 * - The copy is named after the Deno version (`bin/deno-<version>-vz`), so a Deno upgrade makes
 *   the launcher fall back to the unsigned binary (and VZ then says to run `shuru init`).
 *
 * The plist and the command lines are pure and unit-tested; running them needs macOS.
 *
 * @module
 */

import { join } from "node:path";
import { findCommand } from "../assets/host_tools.ts";
import { VmError } from "./errors.ts";

/** The entitlement. */
export const VZ_ENTITLEMENT = "com.apple.security.virtualization";

/** The entitlements property list given to `codesign --entitlements`. */
export const ENTITLEMENTS_PLIST = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>${VZ_ENTITLEMENT}</key>
	<true/>
</dict>
</plist>
`;

/** Where the signed copy of Deno `version` lives under the data home `home`. */
export function signedDenoPath(home: string, version: string): string {
  if (!/^[0-9A-Za-z.+-]+$/.test(version)) {
    throw new VmError("invalid_config", `Cannot name a signed Deno for version ${version}`);
  }
  return join(home, "bin", `deno-${version}-vz`);
}

/** The steps of signing, as data: copy, sign, check, rename. */
export interface SignPlan {
  /** The signed binary's final path. */
  target: string;
  /** The fresh copy that is signed, then renamed to `target`. */
  temporary: string;
  /** Where the entitlements plist is written. */
  plist: string;
  /** `codesign` arguments that sign `temporary`. */
  sign: string[];
  /** `codesign` arguments that print `temporary`'s entitlements (stdout) for the check. */
  verify: string[];
}

/** The plan to sign a copy of the Deno binary for data home `home`. */
export function signPlan(home: string, version: string): SignPlan {
  const target = signedDenoPath(home, version);
  const temporary = `${target}.tmp-${Deno.pid}`;
  const plist = join(home, "bin", "vz.entitlements");
  return {
    target,
    temporary,
    plist,
    sign: ["--force", "--sign", "-", "--entitlements", plist, temporary],
    verify: ["--display", "--entitlements", "-", "--xml", temporary],
  };
}

/** `true` when `codesign --display --entitlements` output grants the entitlement. */
export function grantsVirtualization(entitlements: string): boolean {
  const at = entitlements.indexOf(`<key>${VZ_ENTITLEMENT}</key>`);
  return at >= 0 && /^\s*<true\s*\/>/.test(entitlements.slice(at + VZ_ENTITLEMENT.length + 11));
}

/** Options of {@linkcode ensureSignedDeno}. */
export interface SignOptions {
  /** The data home. */
  home: string;
  /** The Deno binary to copy (default: the running one). */
  deno?: string;
  /** Its version (default: the running one's). */
  version?: string;
  /** PATH to find `codesign` in (default: the standard folders). */
  path?: string;
  /** Sign again even when a signed copy exists. */
  force?: boolean;
}

/** What {@linkcode ensureSignedDeno} did. */
export interface SignResult {
  /** The signed binary. */
  path: string;
  /** `false` when a signed copy was already there. */
  signed: boolean;
}

async function run(program: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, out: text.trim() };
}

/**
 * Makes sure the data home holds a copy of Deno signed with the virtualization entitlement.
 *
 * @throws {VmError} `not_signed` when `codesign` is missing or fails, with what to do.
 */
export async function ensureSignedDeno(options: SignOptions): Promise<SignResult> {
  const plan = signPlan(options.home, options.version ?? Deno.version.deno);
  const codesign = findCommand("codesign", options.path);
  if (!codesign) {
    throw new VmError(
      "not_signed",
      "Cannot sign Deno for Virtualization.framework: codesign was not found (macOS ships it " +
        "in /usr/bin; if it is missing, install the command line tools: xcode-select --install)",
    );
  }
  if (!options.force) {
    const existing = await run(codesign, [...plan.verify.slice(0, -1), plan.target]).catch(() =>
      null
    );
    if (existing?.ok && grantsVirtualization(existing.out)) {
      return { path: plan.target, signed: false };
    }
  }
  await Deno.mkdir(join(options.home, "bin"), { recursive: true });
  await Deno.writeTextFile(plan.plist, ENTITLEMENTS_PLIST);
  await Deno.copyFile(options.deno ?? Deno.execPath(), plan.temporary);
  try {
    await Deno.chmod(plan.temporary, 0o755);
    const signed = await run(codesign, plan.sign);
    if (!signed.ok) {
      throw new VmError(
        "not_signed",
        `Cannot sign ${plan.temporary}: codesign said: ${signed.out}`,
      );
    }
    const check = await run(codesign, plan.verify);
    if (!check.ok || !grantsVirtualization(check.out)) {
      throw new VmError(
        "not_signed",
        `Cannot sign ${plan.temporary}: the signature lacks ${VZ_ENTITLEMENT} (${check.out})`,
      );
    }
    await Deno.rename(plan.temporary, plan.target);
  } finally {
    await Deno.remove(plan.temporary).catch(() => {});
  }
  return { path: plan.target, signed: true };
}
