/**
 * `proxy/http/`: HTTP/1.x on the wire, without I/O policy: the strict head parser, body framing,
 * the chunked codec, a buffered reader for heads, the limits they enforce and their error type.
 *
 * Two readers share it: the allow-list check (`proxy/inspect.ts`) reads every plain-HTTP
 * request a guest sends with it, and the secret relay (`proxy/secret/http_relay.ts`) parses,
 * rewrites and re-frames the requests and responses it carries. One parser for both means a
 * request the check passed is the request the relay sees.
 *
 * @module
 */

export {
  type BodyFraming,
  bytesToByteString,
  byteStringToBytes,
  findHeadEnd,
  hasToken,
  type HeaderField,
  headerTokens,
  headerValue,
  headerValues,
  isFieldValue,
  isTextualContentType,
  narrowAcceptEncoding,
  parseRequestHead,
  parseResponseHead,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  rewriteBasicCredentials,
  serializeRequestHead,
  serializeResponseHead,
  withoutHeader,
} from "./head.ts";
export { ChunkedDecoder, encodeChunk, encodeLastChunk } from "./chunked.ts";
export {
  CREDENTIAL_FIELDS,
  DECODABLE_CODINGS,
  DECODE_CHUNK_BYTES,
  DEFAULT_MAX_BUFFERED_BODY,
  HttpStatus,
  type HttpStatusCode,
  LINGER_MAX_BYTES,
  LINGER_MS,
  MAX_HEAD_BYTES,
  READ_BUFFER_BYTES,
  reasonPhrase,
} from "./constants.ts";
export { HttpRelayError, type HttpRelayErrorCode } from "./error.ts";
export { HttpReader } from "./reader.ts";
