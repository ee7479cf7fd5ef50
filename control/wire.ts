/**
 * Constants of the control protocol (JSON-RPC 2.0, newline-delimited): version, method and
 * notification names, error codes with a name lookup for logs, error kinds and limits.
 *
 * Every other module imports its protocol numbers from here; see docs/control_protocol.md.
 *
 * @module
 */

/** Protocol version reported by `initialize`. Major changes break clients; minor ones add. */
export const CONTROL_PROTOCOL_VERSION = "1.0";

/** JSON-RPC error codes this protocol sends. */
export const RpcErrorCode = {
  /** The line is not JSON (or is longer than the maximum line size). */
  PARSE_ERROR: -32700,
  /** The JSON is not a JSON-RPC 2.0 request object. */
  INVALID_REQUEST: -32600,
  /** No such method. */
  METHOD_NOT_FOUND: -32601,
  /** Parameters are missing, of the wrong type or out of range. */
  INVALID_PARAMS: -32602,
  /** The method ran and failed; `data.kind` says why (ENOENT, TIMEOUT, NO_SUCH_PROCESS...). */
  SERVER_ERROR: -32000,
} as const;

/** One of the {@linkcode RpcErrorCode} values. */
export type RpcErrorCode = typeof RpcErrorCode[keyof typeof RpcErrorCode];

/** Returns the name of a JSON-RPC error code for logs ("INVALID_PARAMS"), or "UNKNOWN(n)". */
export function rpcErrorCodeName(code: number): string {
  for (const [name, value] of Object.entries(RpcErrorCode)) {
    if (value === code) return name;
  }
  return `UNKNOWN(${code})`;
}

/**
 * Machine-readable reasons carried in `error.data.kind`. Errno-like names for file errors, the
 * rest for protocol-level conditions.
 */
export const ERROR_KINDS = [
  "ENOENT",
  "EEXIST",
  "EACCES",
  "EPERM",
  "ENOTDIR",
  "EISDIR",
  "ENOTEMPTY",
  "EINVAL",
  "EFBIG",
  "EIO",
  "TIMEOUT",
  "CANCELLED",
  "NO_SUCH_PROCESS",
  "NO_SUCH_WATCH",
  "PROCESS_EXITED",
  "LINE_TOO_LONG",
  "TOO_MANY",
  "UNSUPPORTED",
  "SANDBOX_GONE",
  "INTERNAL",
] as const;

/** One of {@linkcode ERROR_KINDS}. */
export type ErrorKind = typeof ERROR_KINDS[number];

/** Returns true when `s` is a known {@linkcode ErrorKind}. */
export function isErrorKind(s: unknown): s is ErrorKind {
  return typeof s === "string" && (ERROR_KINDS as readonly string[]).includes(s);
}

/** Request methods, in the order `initialize` lists them. */
export const METHODS = [
  "initialize",
  "exec",
  "spawn",
  "input",
  "close_stdin",
  "kill",
  "resize",
  "wait",
  "ps",
  "attach",
  "detach",
  "watch",
  "unwatch",
  "read_file",
  "write_file",
  "mkdir",
  "read_dir",
  "stat",
  "remove",
  "rename",
  "copy",
  "chmod",
  "checkpoint",
  "shutdown",
  "$/cancel",
] as const;

/** One of {@linkcode METHODS}. */
export type Method = typeof METHODS[number];

/** Signals a client may send with `kill` (names; numbers are read with proto's table). */
export const KILL_SIGNALS = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGKILL",
  "SIGUSR1",
  "SIGUSR2",
  "SIGPIPE",
  "SIGALRM",
  "SIGTERM",
  "SIGCONT",
  "SIGSTOP",
  "SIGTSTP",
  "SIGWINCH",
] as const;

/** Notifications the server sends. */
export const NOTIFICATIONS = ["ready", "output", "exit", "file_change"] as const;

/** One of {@linkcode NOTIFICATIONS}. */
export type NotificationName = typeof NOTIFICATIONS[number];

/** Default and maximum sizes. Every one is a cap on untrusted input or on memory we hold. */
export const Limits = {
  /** Longest line (one JSON message) the server accepts from a client, newline excluded. */
  MAX_LINE_BYTES: 16 * 1024 * 1024,
  /** Longest line a client accepts from the server (an exec result may hold escaped output). */
  MAX_CLIENT_LINE_BYTES: 64 * 1024 * 1024,
  /** Largest `length` of one `read_file` chunk and largest decoded `write_file` chunk. */
  MAX_CHUNK_BYTES: 4 * 1024 * 1024,
  /** `read_file` without `length` returns the whole file only up to this size (else EFBIG). */
  MAX_WHOLE_FILE_BYTES: 8 * 1024 * 1024,
  /** Bytes of output kept per process for `attach` replay. */
  RING_BYTES: 1024 * 1024,
  /** Exited processes kept for `wait`/`attach`/`ps` before the oldest is forgotten. */
  MAX_EXITED_PROCESSES: 256,
  /** Output bytes kept in total for exited processes (the oldest are forgotten first). */
  MAX_EXITED_OUTPUT_BYTES: 64 * 1024 * 1024,
  /** Live processes at once (each keeps up to RING_BYTES of output). */
  MAX_LIVE_PROCESSES: 256,
  /** Watches per connection. */
  MAX_WATCHES: 64,
  /** Default `exec` timeout. */
  DEFAULT_EXEC_TIMEOUT_MS: 300_000,
  /** Default `exec` output kept per stream (bytes beyond it are dropped, `truncated` set). */
  DEFAULT_MAX_OUTPUT_BYTES: 1024 * 1024,
  /** Largest `max_output_bytes` a client may ask for. */
  MAX_OUTPUT_BYTES: 4 * 1024 * 1024,
  /** Bytes queued to one client before producers wait for it (backpressure). */
  CLIENT_QUEUE_BYTES: 8 * 1024 * 1024,
  /** Entries returned by one `read_dir`. */
  MAX_DIR_ENTRIES: 100_000,
} as const;
