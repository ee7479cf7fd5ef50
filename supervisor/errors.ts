/**
 * The error type of the supervisor and its registry.
 *
 * @module
 */

/** What went wrong. */
export type SupervisorErrorCode =
  | "name_in_use"
  | "not_found"
  | "ambiguous"
  | "start_failed"
  | "stop_failed"
  | "internal";

/** A named sandbox could not be started, found or stopped; `message` says what to do. */
export class SupervisorError extends Error {
  /** Machine-readable reason. */
  readonly code: SupervisorErrorCode;
  constructor(code: SupervisorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = "SupervisorError";
    this.code = code;
  }
}
