/**
 * The two error families of the agent protocol.
 *
 * - {@link ConnectionError}: local, never serialized. The connection itself is broken (garbage or
 *   truncated frames, a flow-control violation, a version mismatch, the peer went away). Every
 *   stream on that connection fails with it.
 * - {@link AgentError}: crosses the wire in RESET frames as `{code, message}`. One operation
 *   failed (file not found, permission denied, ...); the connection stays up. Subclasses per
 *   code ({@link AgentNotFoundError}, ...) let callers `catch` by class.
 *
 * @module
 */

/** Why a connection failed. */
export type ConnectionErrorCode =
  /** A frame header or payload violates the format (unknown type, bad length, bad JSON...). */
  | "malformed"
  /** The byte stream ended in the middle of a frame. */
  | "truncated"
  /** The peer sent more DATA than the window allowed, or over-granted credit. */
  | "flow_control"
  /** HELLO missing, wrong magic, or incompatible protocol version. */
  | "handshake"
  /** A cap was exceeded (streams, queued messages...). */
  | "limit"
  /** The peer sent GOAWAY with an error. */
  | "goaway"
  /** The connection was closed (locally or by the peer) while the operation was pending. */
  | "closed"
  /** Reading or writing the underlying transport failed. */
  | "transport"
  /**
   * The session was ended on purpose with both sides' processes kept (`detach`, before a
   * memory snapshot); a new connection can attach to them.
   */
  | "detached";

/** The connection to the peer is unusable; local only, never sent. */
export class ConnectionError extends Error {
  /** What went wrong. */
  readonly code: ConnectionErrorCode;
  /** Creates the error; `message` should read "Cannot <action>: <state>". */
  constructor(code: ConnectionErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConnectionError";
    this.code = code;
  }
}

/** Error kinds that travel in RESET frames (and GOAWAY). */
export const ERROR_CODES = [
  "not_found",
  "permission_denied",
  "already_exists",
  "not_a_directory",
  "is_a_directory",
  "not_empty",
  "invalid_argument",
  "unsupported",
  "busy",
  "connection_refused",
  "timed_out",
  "cancelled",
  "io",
  "protocol",
  "internal",
] as const;

/** An error kind carried on the wire. */
export type AgentErrorCode = typeof ERROR_CODES[number];

/** The JSON payload of RESET and GOAWAY frames. */
export interface AgentErrorPayload {
  /** The kind of failure. */
  code: AgentErrorCode;
  /** A message a user can act on ("Cannot open /x: no such file or directory"). */
  message: string;
}

/** An operation failed on the peer; crosses the wire as {@link AgentErrorPayload}. */
export class AgentError extends Error {
  /** The kind of failure. */
  readonly code: AgentErrorCode;
  /** Creates the error. */
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentError";
    this.code = code;
  }
  /** The wire form of this error. */
  toWire(): AgentErrorPayload {
    return { code: this.code, message: this.message };
  }
}

/** The path does not exist. */
export class AgentNotFoundError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("not_found", message, options);
    this.name = "AgentNotFoundError";
  }
}

/** The agent is not allowed to perform the operation. */
export class AgentPermissionDeniedError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("permission_denied", message, options);
    this.name = "AgentPermissionDeniedError";
  }
}

/** The target already exists. */
export class AgentAlreadyExistsError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("already_exists", message, options);
    this.name = "AgentAlreadyExistsError";
  }
}

/** A path component is not a directory, or a directory was expected. */
export class AgentNotADirectoryError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("not_a_directory", message, options);
    this.name = "AgentNotADirectoryError";
  }
}

/** A file was expected but the path is a directory. */
export class AgentIsADirectoryError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("is_a_directory", message, options);
    this.name = "AgentIsADirectoryError";
  }
}

/** The directory is not empty (remove without `recursive`). */
export class AgentNotEmptyError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("not_empty", message, options);
    this.name = "AgentNotEmptyError";
  }
}

/** The request was invalid (bad field, bad value). */
export class AgentInvalidArgumentError extends AgentError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super("invalid_argument", message, options);
    this.name = "AgentInvalidArgumentError";
  }
}

/** Builds the matching {@link AgentError} subclass from a wire error (untrusted input). */
export function agentErrorFromWire(value: unknown): AgentError {
  let code: AgentErrorCode = "protocol";
  let message = "Peer reset the stream without a valid error";
  if (typeof value === "object" && value !== null) {
    const v = value as Record<string, unknown>;
    if (typeof v.code === "string" && (ERROR_CODES as readonly string[]).includes(v.code)) {
      code = v.code as AgentErrorCode;
    } else if (typeof v.code === "string") {
      code = "internal";
    }
    if (typeof v.message === "string") message = v.message.slice(0, 4096);
  }
  switch (code) {
    case "not_found":
      return new AgentNotFoundError(message);
    case "permission_denied":
      return new AgentPermissionDeniedError(message);
    case "already_exists":
      return new AgentAlreadyExistsError(message);
    case "not_a_directory":
      return new AgentNotADirectoryError(message);
    case "is_a_directory":
      return new AgentIsADirectoryError(message);
    case "not_empty":
      return new AgentNotEmptyError(message);
    case "invalid_argument":
      return new AgentInvalidArgumentError(message);
    default:
      return new AgentError(code, message);
  }
}

/** Maps a Deno/Node error (e.g. from `Deno.stat`) to a wire error code. */
export function errorCodeOf(err: unknown): AgentErrorCode {
  if (err instanceof AgentError) return err.code;
  if (err instanceof Deno.errors.NotFound) return "not_found";
  if (err instanceof Deno.errors.PermissionDenied) return "permission_denied";
  if (err instanceof Deno.errors.AlreadyExists) return "already_exists";
  if (err instanceof Deno.errors.NotADirectory) return "not_a_directory";
  if (err instanceof Deno.errors.IsADirectory) return "is_a_directory";
  if (err instanceof Deno.errors.ConnectionRefused) return "connection_refused";
  if (err instanceof Deno.errors.TimedOut) return "timed_out";
  if (err instanceof Deno.errors.Busy) return "busy";
  if (err instanceof Deno.errors.InvalidData) return "invalid_argument";
  if (err instanceof Deno.errors.NotSupported) return "unsupported";
  if (err instanceof TypeError || err instanceof RangeError) return "invalid_argument";
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case "ENOENT":
      return "not_found";
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "permission_denied";
    case "EEXIST":
      return "already_exists";
    case "ENOTDIR":
      return "not_a_directory";
    case "EISDIR":
      return "is_a_directory";
    case "ENOTEMPTY":
      return "not_empty";
    case "EINVAL":
      return "invalid_argument";
    case "ECONNREFUSED":
      return "connection_refused";
  }
  // Deno reports ENOTEMPTY and a few others only in the message ("Directory not empty").
  const msg = err instanceof Error ? err.message : String(err);
  if (/not empty/i.test(msg)) return "not_empty";
  if (/read-only file system/i.test(msg)) return "permission_denied";
  return "io";
}

/**
 * Converts any thrown value to a wire error, prefixing the message with the action
 * (`"Cannot stat /x"` + `": No such file or directory"`).
 */
export function toWireError(err: unknown, action?: string): AgentErrorPayload {
  const code = errorCodeOf(err);
  const detail = err instanceof Error ? err.message : String(err);
  if (err instanceof AgentError || !action) return { code, message: detail };
  return { code, message: `${action}: ${detail}` };
}
