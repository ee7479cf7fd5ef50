/**
 * The one error type of the HTTP secret relay. Messages never contain secret values or
 * placeholders: they name the part of the message that was wrong, not its bytes.
 *
 * @module
 */

import { HttpStatus, type HttpStatusCode } from "./constants.ts";

/** Why an HTTP message could not be relayed. */
export type HttpRelayErrorCode =
  /** The head is longer than {@linkcode MAX_HEAD_BYTES}. */
  | "head-too-large"
  /** More header (or trailer) fields than {@linkcode MAX_HEADER_COUNT}. */
  | "too-many-headers"
  /** The start line or a header field does not follow RFC 9112. */
  | "malformed-head"
  /** A header line starts with whitespace (obsolete line folding, RFC 9112 §5.2). */
  | "obs-fold"
  /** Not HTTP/1.0 or HTTP/1.1 (HTTP/2 is not negotiated over the terminator). */
  | "unsupported-version"
  /** Contradicting or invalid message framing (Content-Length, Transfer-Encoding). */
  | "bad-framing"
  /** A transfer coding other than `chunked`. */
  | "unsupported-transfer-coding"
  /** A chunked body that breaks RFC 9112 §7.1. */
  | "malformed-chunk"
  /** A secret value cannot be placed where its placeholder was (control bytes in a header). */
  | "unsafe-substitution"
  /** A response content coding the relay cannot decode, so it cannot scrub the body. */
  | "unsupported-content-coding"
  /** A method the relay does not carry (CONNECT). */
  | "method-not-allowed"
  /** The stream ended in the middle of a message. */
  | "truncated";

const STATUS_OF_CODE: Readonly<Record<HttpRelayErrorCode, HttpStatusCode>> = {
  "head-too-large": HttpStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
  "too-many-headers": HttpStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
  "malformed-head": HttpStatus.BAD_REQUEST,
  "obs-fold": HttpStatus.BAD_REQUEST,
  "unsupported-version": HttpStatus.HTTP_VERSION_NOT_SUPPORTED,
  "bad-framing": HttpStatus.BAD_REQUEST,
  "unsupported-transfer-coding": HttpStatus.NOT_IMPLEMENTED,
  "malformed-chunk": HttpStatus.BAD_REQUEST,
  "unsafe-substitution": HttpStatus.BAD_GATEWAY,
  "unsupported-content-coding": HttpStatus.BAD_GATEWAY,
  "method-not-allowed": HttpStatus.METHOD_NOT_ALLOWED,
  "truncated": HttpStatus.BAD_REQUEST,
};

/** A protocol failure of the relay, with the status it answers the guest when it still can. */
export class HttpRelayError extends Error {
  /** What went wrong. */
  readonly code: HttpRelayErrorCode;
  /** Builds the error; `cause` is the underlying error if any. */
  constructor(code: HttpRelayErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HttpRelayError";
    this.code = code;
  }

  /** The status answered to the guest when this error is about its request. */
  get status(): HttpStatusCode {
    return STATUS_OF_CODE[this.code];
  }
}
