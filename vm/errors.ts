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
  /** The host cannot run this backend (VZ off macOS, macOS too old, not the main thread). */
  | "unsupported_host"
  /** Virtualization.framework refused or failed an operation (its message is included). */
  | "vz_failed"
  /** The process lacks the com.apple.security.virtualization entitlement. */
  | "not_signed";

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
