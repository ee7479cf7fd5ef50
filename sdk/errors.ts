/**
 * Typed errors of the SDK, one class per condition a caller is expected to catch. Each carries
 * the protocol's `kind` as `code` and the original error as `cause`.
 *
 * @module
 */

import {
  type ControlClient,
  ControlConnectionError,
  type ErrorKind,
  RpcError,
} from "../control/mod.ts";

/** What went wrong: a protocol error kind, or CLOSED / CONNECT for the connection. */
export type SandboxErrorCode = ErrorKind | "CLOSED" | "CONNECT" | "START";

/** Base class of every SDK error. */
export class SandboxError extends Error {
  /** The condition. */
  readonly code: SandboxErrorCode;
  constructor(code: SandboxErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SandboxError";
    this.code = code;
  }
}

/** A path does not exist (ENOENT). */
export class NotFoundError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ENOENT", message, options);
    this.name = "NotFoundError";
  }
}

/** A path exists already (EEXIST). */
export class AlreadyExistsError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("EEXIST", message, options);
    this.name = "AlreadyExistsError";
  }
}

/** Permission denied (EACCES, EPERM). */
export class PermissionDeniedError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("EACCES", message, options);
    this.name = "PermissionDeniedError";
  }
}

/** The operation took too long (TIMEOUT). */
export class TimeoutError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("TIMEOUT", message, options);
    this.name = "TimeoutError";
  }
}

/** No such process, or it has exited (NO_SUCH_PROCESS, PROCESS_EXITED). */
export class ProcessNotFoundError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NO_SUCH_PROCESS", message, options);
    this.name = "ProcessNotFoundError";
  }
}

/** Bad arguments (INVALID_PARAMS, EINVAL). */
export class InvalidArgumentError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("EINVAL", message, options);
    this.name = "InvalidArgumentError";
  }
}

/** The connection to the sandbox closed (it stopped, or the socket broke). */
export class ConnectionClosedError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("CLOSED", message, options);
    this.name = "ConnectionClosedError";
  }
}

/**
 * Sends one request on `client`, turning a failure into the matching SDK error: how every SDK
 * object talks to its sandbox.
 */
export async function sdkRequest<T = Record<string, unknown>>(
  client: ControlClient,
  method: string,
  options: { params: Record<string, unknown>; signal?: AbortSignal },
): Promise<T> {
  try {
    return await client.request<T>(
      method,
      options.params,
      options.signal ? { signal: options.signal } : {},
    );
  } catch (err) {
    throw toSandboxError(err);
  }
}

/** Turns a control client error into the matching SDK error (other errors pass through). */
export function toSandboxError(err: unknown): unknown {
  if (err instanceof SandboxError) return err;
  if (err instanceof ControlConnectionError) {
    return err.code === "CONNECT"
      ? new SandboxError("CONNECT", err.message, { cause: err })
      : new ConnectionClosedError(err.message, { cause: err });
  }
  if (!(err instanceof RpcError)) return err;
  const o = { cause: err };
  switch (err.kind) {
    case "ENOENT":
      return new NotFoundError(err.message, o);
    case "EEXIST":
      return new AlreadyExistsError(err.message, o);
    case "EACCES":
    case "EPERM":
      return new PermissionDeniedError(err.message, o);
    case "TIMEOUT":
      return new TimeoutError(err.message, o);
    case "NO_SUCH_PROCESS":
    case "PROCESS_EXITED":
      return new ProcessNotFoundError(err.message, o);
    case "EINVAL":
      return new InvalidArgumentError(err.message, o);
    default:
      return new SandboxError(err.kind, err.message, o);
  }
}
