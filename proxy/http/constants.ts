/**
 * HTTP/1.1 constants of the secret-swapping relay in one place: size caps, status codes the
 * relay answers itself (with a name lookup for logs), the content codings it can decode and the
 * media types whose bodies it treats as text.
 *
 * @module
 */

/** Largest request or response head (start line + header fields + blank line) accepted. */
export const MAX_HEAD_BYTES: number = 64 * 1024;
/** Most header fields (or trailer fields) accepted in one message. */
export const MAX_HEADER_COUNT: number = 128;
/** Longest chunk-size line (size + chunk extensions) accepted in a chunked body. */
export const MAX_CHUNK_LINE_BYTES: number = 4 * 1024;
/** Most hex digits in a chunk size: 13 digits is 2^52, above any body we would relay. */
export const MAX_CHUNK_SIZE_DIGITS: number = 13;
/** Largest request body buffered by default to substitute in it (16 MiB). */
export const DEFAULT_MAX_BUFFERED_BODY: number = 16 * 1024 * 1024;
/** Size of each read from either stream. */
export const READ_BUFFER_BYTES: number = 128 * 1024;
/** Output chunk size of the decompressors (bigger than node's 16 KiB default: fewer writes). */
export const DECODE_CHUNK_BYTES: number = 64 * 1024;

/**
 * After answering a bad request itself, the relay half-closes and reads (and drops) up to this
 * many guest bytes before closing, so the guest is not reset before it reads the answer
 * (closing a TCP socket with unread input sends RST, which can discard the answer in flight).
 */
export const LINGER_MAX_BYTES: number = 1024 * 1024;
/** Longest wait for the guest to close after a local answer, in milliseconds. */
export const LINGER_MS: number = 1000;

/**
 * Request fields (lowercase) that carry credentials: a placeholder anywhere in their value is
 * replaced (`"header"` injection); other fields only when the whole value is the placeholder,
 * `Bearer` or `Basic` and it.
 */
export const CREDENTIAL_FIELDS: readonly string[] = [
  "authorization",
  "proxy-authorization",
  "x-api-key",
  "api-key",
];

/** Status codes the relay sends or reasons about by name. */
export const HttpStatus = {
  CONTINUE: 100,
  SWITCHING_PROTOCOLS: 101,
  NO_CONTENT: 204,
  NOT_MODIFIED: 304,
  BAD_REQUEST: 400,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  REQUEST_HEADER_FIELDS_TOO_LARGE: 431,
  NOT_IMPLEMENTED: 501,
  BAD_GATEWAY: 502,
  HTTP_VERSION_NOT_SUPPORTED: 505,
} as const;

/** One of the status codes in {@linkcode HttpStatus}. */
export type HttpStatusCode = typeof HttpStatus[keyof typeof HttpStatus];

const REASON_PHRASES: Readonly<Record<HttpStatusCode, string>> = {
  100: "Continue",
  101: "Switching Protocols",
  204: "No Content",
  304: "Not Modified",
  400: "Bad Request",
  405: "Method Not Allowed",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  505: "HTTP Version Not Supported",
};

/** The reason phrase of a status the relay sends itself (for logs and its own responses). */
export function reasonPhrase(status: HttpStatusCode): string {
  return REASON_PHRASES[status];
}

/** Content codings the relay can decode to scrub secrets from a response body. */
export const DECODABLE_CODINGS: readonly string[] = ["gzip", "x-gzip", "deflate", "br"];

/** The `Accept-Encoding` codings kept when rewriting a request (what {@linkcode DECODABLE_CODINGS} covers). */
export const ACCEPTED_CODINGS: readonly string[] = ["gzip", "x-gzip", "deflate", "br", "identity"];

/** Media types (lowercase, parameters stripped) whose request bodies are substituted. */
export const TEXTUAL_MEDIA_TYPES: readonly string[] = [
  "application/json",
  "application/x-www-form-urlencoded",
  "application/xml",
  "multipart/form-data",
];

/** Media type suffixes (structured syntax) treated as textual: `application/vnd.x+json`. */
export const TEXTUAL_MEDIA_SUFFIXES: readonly string[] = ["+json", "+xml"];
