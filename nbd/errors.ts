/**
 * Errors of the NBD server. Two families, as in nbdkit:
 *
 * - {@linkcode NbdProtocolError}: the peer broke framing (bad magic, short read, oversize
 *   option). It ends that one connection; it never crosses the wire.
 * - NBD error values (`ErrorCode` in `wire.ts`): a single request failed. They cross the wire
 *   in a reply and the connection keeps serving. Backend failures are narrowed to them by
 *   {@linkcode nbdErrorOf}, after the real cause has been logged.
 *
 * @module
 */

import { BlockBackendError } from "./backend.ts";
import { ErrorCode, type ErrorName } from "./wire.ts";

/** Why a connection was dropped. */
export type NbdProtocolErrorCode =
  | "SHORT_READ"
  | "BAD_MAGIC"
  | "BAD_CLIENT_FLAGS"
  | "TOO_MANY_OPTIONS"
  | "OPTION_TOO_LONG"
  | "UNKNOWN_EXPORT"
  | "HANDSHAKE_TIMEOUT";

/** A framing violation by the peer: the connection cannot continue. */
export class NbdProtocolError extends Error {
  /** What went wrong. */
  readonly code: NbdProtocolErrorCode;

  /** Creates the error; `message` should read "Cannot <action>: <state>". */
  constructor(code: NbdProtocolErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NbdProtocolError";
    this.code = code;
  }
}

/** Host errno names (from node:fs and Deno errors) and the NBD error each one becomes. */
const HOST_ERRNO_TO_NBD: Record<string, ErrorName> = {
  EPERM: "EPERM",
  EACCES: "EPERM",
  EROFS: "EPERM",
  ENOSPC: "ENOSPC",
  EDQUOT: "ENOSPC",
  EFBIG: "ENOSPC",
  EINVAL: "EINVAL",
  ENOMEM: "ENOMEM",
  EOVERFLOW: "EOVERFLOW",
  ENOTSUP: "ENOTSUP",
  EOPNOTSUPP: "ENOTSUP",
  ESHUTDOWN: "ESHUTDOWN",
};

/**
 * The NBD error value a backend failure is reported as: a {@linkcode BlockBackendError}'s code,
 * a host errno mapped as the protocol asks (EDQUOT/EFBIG → ENOSPC, EROFS/EACCES → EPERM), and
 * EIO for anything else.
 */
export function nbdErrorOf(err: unknown): ErrorName {
  if (err instanceof BlockBackendError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string") {
    const mapped = HOST_ERRNO_TO_NBD[code];
    if (mapped !== undefined) return mapped;
  }
  return "EIO";
}

/** Numeric wire value of an NBD error name. */
export function errorValue(name: ErrorName): number {
  return ErrorCode[name];
}
