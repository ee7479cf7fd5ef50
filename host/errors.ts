/**
 * The error type of the host's environment: programs shuru needs that are missing, installing
 * the packages that provide them, and an OS or architecture shuru does not run on.
 *
 * @module
 */

/** What is wrong with the host. */
export type HostErrorCode =
  | "missing_host_tools"
  | "install_refused"
  | "install_failed"
  | "no_data_home"
  /** The host's CPU architecture is not one shuru runs guests on. */
  | "unsupported_arch"
  /** The host's OS is neither Linux nor macOS, or cannot tell what shuru asks of it. */
  | "unsupported_os";

/** The host lacks something shuru needs; `message` says what to run about it. */
export class HostError extends Error {
  /** Machine-readable reason. */
  readonly code: HostErrorCode;
  /** The Debian packages that would fix it. */
  readonly packages: string[];
  constructor(
    code: HostErrorCode,
    message: string,
    options?: { cause?: unknown; packages?: string[] },
  ) {
    super(message, { cause: options?.cause });
    this.name = "HostError";
    this.code = code;
    this.packages = options?.packages ?? [];
  }
}
