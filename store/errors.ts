/**
 * The error class of the block store, with a `code` callers can switch on.
 *
 * @module
 */

/** What went wrong in the store. */
export type StoreErrorCode =
  /** A checkpoint name has characters outside the safe set. */
  | "invalid_name"
  /** No checkpoint with that name exists. */
  | "not_found"
  /** A checkpoint with that name exists and overwriting was not asked for. */
  | "exists"
  /** A manifest failed validation (magic, version, sizes, checksum). */
  | "bad_manifest"
  /** A chunk is missing or its bytes do not match its hash. */
  | "corrupt_chunk"
  /** An argument is out of range (size, offset, block size). */
  | "invalid_argument"
  /** The device or snapshot was closed. */
  | "closed"
  /** A registry reference names something that is not a shuru checkpoint. */
  | "not_checkpoint"
  /** A chunk could not be fetched from the registry (after retries). */
  | "unavailable";

/** An error raised by the block store. Messages read "Cannot <action> <thing>: <state>". */
export class StoreError extends Error {
  /** Machine-readable reason. */
  readonly code: StoreErrorCode;

  /**
   * Creates the error.
   *
   * @param code What went wrong.
   * @param message A message the user can act on.
   * @param options `cause`: the underlying error, if any.
   */
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreError";
    this.code = code;
  }
}
