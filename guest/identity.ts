/**
 * Making a guest unique and current (the `set_identity` request). Every guest restored from
 * one memory snapshot starts with the same kernel RNG state, the same wall clock (the moment
 * of the save) and the same names; Firecracker's `random-for-clones.md` explains why the RNG
 * must be reseeded before anything runs. QEMU 7.2's microvm machine takes `-device vmgenid`
 * but does not describe it in its ACPI tables, so the guest's vmgenid driver never reseeds by
 * itself: the host's entropy arrives through this request instead.
 *
 * Order: entropy is added and credited (RNDADDENTROPY), the CRNG is reseeded from it at once
 * (RNDRESEEDCRNG: without it, per-CPU generators keep their key until the next periodic
 * reseed, up to a minute later), then the clock, the hostname and the machine-id.
 *
 * @module
 */

import { libc } from "../ffi/mod.ts";
import { AgentError, type IdentityResult, type SetIdentityRequest } from "../proto/mod.ts";

/** Where the pieces live (tests point them elsewhere). */
export interface IdentityPaths {
  /** The random device the ioctls go to. @default "/dev/urandom" */
  random?: string;
  /** The kernel hostname file. @default "/proc/sys/kernel/hostname" */
  hostname?: string;
  /** The machine-id file. @default "/etc/machine-id" */
  machineId?: string;
}

function fail(what: string, e: unknown): AgentError {
  const reason = e instanceof Error ? e.message : String(e);
  const code = e instanceof libc.LibcError &&
      (e.errno === libc.ERRNO.EPERM || e.errno === libc.ERRNO.EACCES)
    ? "permission_denied"
    : "io";
  return new AgentError(code, `Cannot ${what}: ${reason}`, { cause: e });
}

/** Applies `req`; see the module doc. */
export function applyIdentity(req: SetIdentityRequest, paths: IdentityPaths = {}): IdentityResult {
  const entropy = Uint8Array.fromBase64(req.entropy);
  const bits = entropy.length * 8;
  const random = paths.random ?? "/dev/urandom";
  let fd: number;
  try {
    fd = libc.open(random, libc.LINUX.O_WRONLY | libc.LINUX.O_CLOEXEC);
  } catch (e) {
    throw fail(`open ${random}`, e);
  }
  try {
    libc.addEntropy(fd, entropy, bits);
    libc.reseedCrng(fd);
  } catch (e) {
    throw fail("reseed the kernel RNG", e);
  } finally {
    entropy.fill(0);
    libc.close(fd);
  }
  const before = Date.now();
  // The request spent a little time in flight; the host's clock was read just before sending.
  try {
    libc.setRealtimeClock(req.unixMs);
  } catch (e) {
    throw fail("set the clock", e);
  }
  const clockStepMs = req.unixMs - before;
  const hostnameFile = paths.hostname ?? "/proc/sys/kernel/hostname";
  try {
    Deno.writeTextFileSync(hostnameFile, req.hostname);
  } catch (e) {
    throw fail(`set the hostname (${hostnameFile})`, e);
  }
  const machineIdFile = paths.machineId ?? "/etc/machine-id";
  try {
    const tmp = `${machineIdFile}.shuru-tmp`;
    Deno.writeTextFileSync(tmp, `${req.machineId}\n`, { mode: 0o444 });
    Deno.renameSync(tmp, machineIdFile);
  } catch (e) {
    throw fail(`write ${machineIdFile}`, e);
  }
  return { entropyBits: bits, clockStepMs };
}
