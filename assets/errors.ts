/**
 * The error type of guest asset builds.
 *
 * @module
 */

/** What went wrong while building or finding guest assets. */
export type AssetErrorCode =
  | "missing_host_tools"
  | "kernel_not_found"
  | "kernel_invalid"
  | "module_not_found"
  | "agent_not_found"
  | "command_failed"
  | "install_refused"
  | "unsupported_arch"
  | "download_failed";

/** A guest asset build failed; `message` says what to do about it. */
export class AssetError extends Error {
  /** Machine-readable reason. */
  readonly code: AssetErrorCode;
  /** For `missing_host_tools`: the Debian packages to install. */
  readonly packages: string[];
  constructor(
    code: AssetErrorCode,
    message: string,
    options?: { cause?: unknown; packages?: string[] },
  ) {
    super(message, { cause: options?.cause });
    this.name = "AssetError";
    this.code = code;
    this.packages = options?.packages ?? [];
  }
}
