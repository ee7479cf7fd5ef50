/**
 * Errors of booting and stopping a sandbox.
 *
 * @module
 */

/** What went wrong. */
export type RunnerErrorCode = "boot_failed" | "save_failed" | "invalid_config";

/** A sandbox could not be booted or stopped as asked. */
export class RunnerError extends Error {
  /** Machine-readable cause. */
  readonly code: RunnerErrorCode;
  constructor(code: RunnerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RunnerError";
    this.code = code;
  }
}
