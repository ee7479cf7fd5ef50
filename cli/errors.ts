/**
 * How the CLI tells a user what went wrong: one translation, {@linkcode describeError}, from
 * every error class it can meet to a line to print and an exit code. `runCli` uses it for
 * whatever a command throws; commands throw domain errors as they come, or a
 * {@linkcode UserError} when they have something to add (which sandbox, which flag).
 *
 * Exit codes:
 * - 2: the request cannot be done as asked (a bad flag, setting or name; the host lacks what
 *   shuru needs; the guest image cannot be built from it);
 * - 1: the store or a registry refused (no such checkpoint, it exists already, unauthorized,
 *   unreachable), or the host's file system did;
 * - 125: shuru could not boot, reach or keep a sandbox (the VM, its agent, the supervisor), so
 *   it never mistakes its own failure for a guest command's exit code;
 * - 130: interrupted.
 *
 * @module
 */

import { AgentError, ConnectionError } from "../agent/mod.ts";
import { AssetError, BundleError } from "../assets/mod.ts";
import { ControlConnectionError, RpcError } from "../control/mod.ts";
import { HostError } from "../host/mod.ts";
import { ImageError } from "../image/mod.ts";
import { RegistryError } from "../oci/mod.ts";
import { RunnerError } from "../runner/mod.ts";
import { SandboxError } from "../sdk/mod.ts";
import { SpecError } from "../spec/mod.ts";
import { StoreError } from "../store/mod.ts";
import { SupervisorError } from "../supervisor/mod.ts";
import { VmError } from "../vm/mod.ts";

/** An error caused by the user's input or environment, with a message they can act on. */
export class UserError extends Error {
  /** Process exit code to use. */
  readonly exitCode: number;
  constructor(message: string, options?: { exitCode?: number; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = "UserError";
    this.exitCode = options?.exitCode ?? 2;
  }
}

/** What the CLI prints for an error and the code it exits with. */
export interface ErrorReport {
  /** The text after `shuru: `; one line (a boot failure appends the guest console's tail). */
  message: string;
  /** Non-zero. */
  exitCode: number;
}

/** Errors of the host's file system a user can act on (a path, a permission). */
const FILE_SYSTEM_ERRORS = [
  Deno.errors.PermissionDenied,
  Deno.errors.NotFound,
  Deno.errors.AlreadyExists,
  Deno.errors.NotADirectory,
  Deno.errors.IsADirectory,
  Deno.errors.NotCapable,
];

/**
 * The report for `err`, or undefined when it is a bug (the caller lets its stack trace show).
 */
export function describeError(err: unknown): ErrorReport | undefined {
  if (!(err instanceof Error)) return undefined;
  const report = (exitCode: number): ErrorReport => ({ message: err.message, exitCode });
  if (err instanceof UserError) return report(err.exitCode);
  if (err instanceof Deno.errors.Interrupted) return report(130);
  if (
    err instanceof SpecError || err instanceof HostError || err instanceof AssetError ||
    err instanceof BundleError || err instanceof SupervisorError
  ) {
    return report(2);
  }
  if (err instanceof VmError) return report(err.code === "invalid_config" ? 2 : 125);
  if (err instanceof StoreError || err instanceof RegistryError) return report(1);
  // A registry that refused or lacks the image, like a checkpoint's; any other image problem
  // (its reference, its content, its platform) is the image's.
  if (err instanceof ImageError) {
    return report(err.code === "registry" || err.code === "not_found" ? 1 : 2);
  }
  if (
    err instanceof RunnerError || err instanceof SandboxError || err instanceof ConnectionError ||
    err instanceof AgentError ||
    err instanceof ControlConnectionError || err instanceof RpcError
  ) {
    return report(125);
  }
  if (FILE_SYSTEM_ERRORS.some((cls) => err instanceof cls)) return report(1);
  return undefined;
}
