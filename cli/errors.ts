/**
 * Errors the CLI prints as one line (no stack trace) before exiting with a code.
 *
 * @module
 */

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
