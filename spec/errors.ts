/**
 * The error type of sandbox specs: a setting that cannot describe a sandbox (a bad flag, a bad
 * `shuru.json` key or value, a bad `--spec` field). Its message names the setting and says what
 * it expects.
 *
 * @module
 */

/** What is wrong with the settings. */
export type SpecErrorCode = "invalid_setting" | "invalid_config_file";

/** A sandbox setting was refused at the edge, before anything booted. */
export class SpecError extends Error {
  /** Machine-readable reason. */
  readonly code: SpecErrorCode;
  constructor(code: SpecErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SpecError";
    this.code = code;
  }
}
