/**
 * The error type of guest asset builds.
 *
 * @module
 */

/** What went wrong while building or finding guest assets. */
export type AssetErrorCode =
  | "kernel_not_found"
  | "kernel_invalid"
  | "module_not_found"
  | "agent_not_found"
  | "command_failed"
  | "no_user_namespace"
  /** A user's `--kernel`, `--initrd` or `--rootfs` is missing, unreadable or of the wrong kind. */
  | "boot_file_invalid"
  /** A foreign architecture's packages (apt) or Deno (npm), or a bundle, could not be fetched. */
  | "download_failed"
  /** A bundle of another architecture or asset format, or a malformed digest. */
  | "bundle_refused"
  /** This host cannot build guest assets (macOS) and no bundle is installed. */
  | "not_installed";

/** A guest asset build failed; `message` says what to do about it. */
export class AssetError extends Error {
  /** Machine-readable reason. */
  readonly code: AssetErrorCode;
  /** For `kernel_not_found`: the Debian packages to install. */
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
