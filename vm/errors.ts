/**
 * The error type of the VM backends.
 *
 * @module
 */

/** What went wrong with a VM. */
export type VmErrorCode =
  | "invalid_config"
  | "spawn_failed"
  | "qemu_failed"
  | "boot_failed"
  | "agent_timeout"
  | "instance_busy"
  | "save_failed"
  | "restore_failed";

/** A VM could not be configured, started or run; `message` says what to do about it. */
export class VmError extends Error {
  /** Machine-readable reason. */
  readonly code: VmErrorCode;
  constructor(code: VmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = "VmError";
    this.code = code;
  }
}
