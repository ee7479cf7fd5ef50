/**
 * The error that crosses the wire: {@linkcode RpcError} carries a numeric JSON-RPC code and a
 * `data.kind`. Handlers throw it; the dispatcher turns it into an error response; the client turns
 * an error response back into one. Local client conditions (connection closed) are
 * {@linkcode ControlConnectionError}, which is never serialized.
 *
 * @module
 */

import { type ErrorKind, isErrorKind, RpcErrorCode } from "./wire.ts";

/** The `error` member of a JSON-RPC response, as this protocol fills it. */
export interface RpcErrorObject {
  /** JSON-RPC code, one of {@linkcode RpcErrorCode}. */
  code: number;
  /** One line a user can act on. */
  message: string;
  /** Machine-readable details; `kind` is always present in errors this server sends. */
  data?: { kind: ErrorKind; [key: string]: unknown };
}

/** Options of {@linkcode RpcError}. */
export interface RpcErrorOptions {
  /** Extra `data` fields besides `kind`. */
  details?: Record<string, unknown>;
  /** The underlying error (kept local, not serialized). */
  cause?: unknown;
}

/** A protocol error: serialized as a JSON-RPC error object. */
export class RpcError extends Error {
  /** JSON-RPC code. */
  readonly code: number;
  /** Machine-readable reason. */
  readonly kind: ErrorKind;
  /** Extra data fields. */
  readonly details: Record<string, unknown>;

  constructor(code: number, kind: ErrorKind, message: string, options: RpcErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "RpcError";
    this.code = code;
    this.kind = kind;
    this.details = options.details ?? {};
  }

  /** The wire form. */
  toJSON(): RpcErrorObject {
    return { code: this.code, message: this.message, data: { ...this.details, kind: this.kind } };
  }

  /** Rebuilds an error from a wire object (unknown kinds become INTERNAL). */
  static fromObject(obj: unknown): RpcError {
    const o = (typeof obj === "object" && obj !== null ? obj : {}) as Record<string, unknown>;
    const code = typeof o.code === "number" ? o.code : RpcErrorCode.SERVER_ERROR;
    const message = typeof o.message === "string" ? o.message : "Unknown error from the server";
    const data = (typeof o.data === "object" && o.data !== null ? o.data : {}) as Record<
      string,
      unknown
    >;
    const { kind, ...details } = data;
    return new RpcError(code, isErrorKind(kind) ? kind : "INTERNAL", message, { details });
  }
}

/** Shorthand for an invalid-params error. */
export function invalidParams(message: string): RpcError {
  return new RpcError(RpcErrorCode.INVALID_PARAMS, "EINVAL", message);
}

/** Shorthand for a server error of `kind`. */
export function serverError(
  kind: ErrorKind,
  message: string,
  options?: RpcErrorOptions,
): RpcError {
  return new RpcError(RpcErrorCode.SERVER_ERROR, kind, message, options);
}

/** Why a client-side call failed without a server answer. */
export type ControlConnectionErrorCode = "CLOSED" | "PROTOCOL" | "CONNECT";

/** A local client condition: the connection closed, or the server broke the protocol. */
export class ControlConnectionError extends Error {
  /** What happened. */
  readonly code: ControlConnectionErrorCode;
  constructor(code: ControlConnectionErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ControlConnectionError";
    this.code = code;
  }
}

const ERRNO_KINDS: Record<string, ErrorKind> = {
  NotFound: "ENOENT",
  AlreadyExists: "EEXIST",
  PermissionDenied: "EACCES",
  NotADirectory: "ENOTDIR",
  IsADirectory: "EISDIR",
  DirectoryNotEmpty: "ENOTEMPTY",
  InvalidData: "EINVAL",
  TimedOut: "TIMEOUT",
  // Codes of the guest agent protocol (proto/errors.ts).
  not_found: "ENOENT",
  permission_denied: "EACCES",
  already_exists: "EEXIST",
  not_a_directory: "ENOTDIR",
  is_a_directory: "EISDIR",
  not_empty: "ENOTEMPTY",
  invalid_argument: "EINVAL",
  unsupported: "UNSUPPORTED",
  busy: "EIO",
  connection_refused: "EIO",
  timed_out: "TIMEOUT",
  cancelled: "CANCELLED",
  io: "EIO",
  protocol: "SANDBOX_GONE",
  internal: "INTERNAL",
  ConnectionError: "SANDBOX_GONE",
};

/**
 * Maps an error from a backend (Deno error classes, errors with an errno-style `code` or `kind`)
 * to an {@linkcode RpcError}, keeping the message. Unrecognized errors become EIO.
 */
export function toRpcError(err: unknown, action: string): RpcError {
  if (err instanceof RpcError) return err;
  const e = err as { name?: unknown; code?: unknown; kind?: unknown; message?: unknown };
  let kind: ErrorKind | undefined;
  for (const c of [e?.kind, e?.code]) {
    if (isErrorKind(c)) kind = c;
  }
  if (!kind && typeof e?.code === "string") kind = ERRNO_KINDS[e.code];
  if (!kind && typeof e?.name === "string") kind = ERRNO_KINDS[e.name];
  const text = typeof e?.message === "string" ? e.message : String(err);
  if (!kind) {
    const m = /\b(ENOENT|EEXIST|EACCES|EPERM|ENOTDIR|EISDIR|ENOTEMPTY|EINVAL|EFBIG)\b/.exec(text);
    kind = (m?.[1] as ErrorKind | undefined) ?? "EIO";
  }
  const message = text.startsWith("Cannot") ? text : `Cannot ${action}: ${text}`;
  return serverError(kind, message, { cause: err });
}
