/**
 * The error class of the registry client, with one `code` per way a registry conversation can
 * fail, so callers (and the CLI's one-line messages) can tell them apart.
 *
 * @module
 */

/** What went wrong talking to a registry. */
export type RegistryErrorCode =
  /** The reference does not parse (`registry/repo:tag`, `@sha256:`...). */
  | "invalid_reference"
  /** 401: no credentials, or the registry refused them. */
  | "unauthorized"
  /** 403: the credentials are valid but lack access to the repository. */
  | "denied"
  /** 404: no such repository, tag, manifest or blob. */
  | "not_found"
  /** 429: too many requests, still refused after retries. */
  | "rate_limited"
  /** 5xx: the registry failed, still failing after retries. */
  | "server_error"
  /** The registry could not be reached (refused, reset, DNS, TLS, timeout) after retries. */
  | "network"
  /** A response's length differs from the size the registry or the manifest announced. */
  | "size_mismatch"
  /** Bytes received do not hash to the digest they were asked by. */
  | "digest_mismatch"
  /** A manifest or blob has a media type this client does not accept. */
  | "media_type"
  /** Plain HTTP was needed but not allowed (only loopback or `--insecure-registry`). */
  | "insecure"
  /** Any other answer the protocol does not allow (a bad status, malformed JSON, ...). */
  | "bad_response";

/** An error raised by the registry client. Messages read "Cannot <action> <thing>: <why>". */
export class RegistryError extends Error {
  /** Machine-readable reason. */
  readonly code: RegistryErrorCode;
  /** The HTTP status, when the error came from one. */
  readonly status: number | undefined;

  /**
   * Creates the error.
   *
   * @param code What went wrong.
   * @param message A message the user can act on.
   * @param options `status`: the HTTP status; `cause`: the underlying error.
   */
  constructor(
    code: RegistryErrorCode,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "RegistryError";
    this.code = code;
    this.status = options.status;
  }
}

/** The error code for an HTTP status that is not a success. */
export function codeForStatus(status: number): RegistryErrorCode {
  if (status === 401) return "unauthorized";
  if (status === 403) return "denied";
  if (status === 404) return "not_found";
  if (status === 429) return "rate_limited";
  if (status >= 500) return "server_error";
  return "bad_response";
}
