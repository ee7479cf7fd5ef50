/**
 * HTTP/1.1 message heads without I/O: parse and serialize request and response heads (RFC 9112
 * §2-§5), header field helpers, the `Authorization: Basic` rewrite, `Accept-Encoding`
 * narrowing, and the body framing decision (RFC 9112 §6.3).
 *
 * Head text is kept as "byte strings": one UTF-16 code unit per byte (0-255), so any byte the
 * peer sent survives a parse/serialize round trip, and secrets are matched as bytes.
 *
 * Strictness (everything from the guest is untrusted): lines must end in CRLF (a bare LF or
 * CR is rejected, so we never read a head differently from the upstream server we re-serialize
 * it for), obsolete line folding is rejected, field names must be tokens, field values must not
 * hold control bytes, the head is capped by {@linkcode MAX_HEAD_BYTES} and
 * {@linkcode MAX_HEADER_COUNT}. A request with both Content-Length and Transfer-Encoding, or
 * with Content-Length values that disagree, is refused rather than guessed (request smuggling).
 *
 * @module
 */

import {
  ACCEPTED_CODINGS,
  HttpStatus,
  MAX_HEADER_COUNT,
  TEXTUAL_MEDIA_SUFFIXES,
  TEXTUAL_MEDIA_TYPES,
} from "./constants.ts";
import { HttpRelayError } from "./error.ts";

/** One header field as a byte string pair; the name keeps the sender's case. */
export type HeaderField = [name: string, value: string];

/** The HTTP versions the relay speaks. */
export type HttpVersion = "HTTP/1.0" | "HTTP/1.1";

/** A parsed request head. */
export interface RequestHead {
  /** The method token, case-sensitive (`GET`). */
  method: string;
  /** The request target as sent (origin-form, absolute-form, authority-form or `*`). */
  target: string;
  /** The protocol version. */
  version: HttpVersion;
  /** Header fields in order. */
  headers: HeaderField[];
}

/** A parsed response head. */
export interface ResponseHead {
  /** The protocol version. */
  version: HttpVersion;
  /** The three-digit status code. */
  status: number;
  /** The reason phrase (may be empty). */
  reason: string;
  /** Header fields in order. */
  headers: HeaderField[];
}

/** How a message body is delimited. */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

const CR = 0x0d;
const LF = 0x0a;
/** Content-Length digits accepted: 15 digits stays below 2^53. */
const MAX_CONTENT_LENGTH_DIGITS = 15;

/** Bytes → byte string (one code unit per byte; not TextDecoder's windows-1252 "latin1"). */
export function bytesToByteString(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
}

/**
 * Byte string → bytes.
 *
 * @throws {RangeError} If a code unit is above 255 (not a byte string).
 */
export function byteStringToBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError("Cannot encode a head: a character is not a byte");
    out[i] = c;
  }
  return out;
}

/**
 * Where a head ends: the index just past its CRLF CRLF, or -1 if not there yet.
 *
 * @param buf The bytes received so far.
 * @param from Where to resume searching (earlier bytes were searched before).
 */
export function findHeadEnd(buf: Uint8Array, from = 0): number {
  for (let i = Math.max(from, 3); i < buf.length; i++) {
    i = buf.indexOf(LF, i);
    if (i === -1) return -1;
    if (buf[i - 1] === CR && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
  }
  return -1;
}

function malformed(what: string): HttpRelayError {
  return new HttpRelayError("malformed-head", `Cannot parse HTTP head: ${what}`);
}

function isTokenChar(c: number): boolean {
  // RFC 9110 §5.6.2 tchar.
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
    "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c));
}

/** True when `text` is a non-empty RFC 9110 token. */
export function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) if (!isTokenChar(text.charCodeAt(i))) return false;
  return true;
}

/** True when `text` only holds bytes allowed in a field value (HTAB, SP, VCHAR, obs-text). */
export function isFieldValue(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x09) continue;
    if (c < 0x20 || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/** Splits a head (ending in CRLF CRLF) into lines, rejecting bare CR or LF. */
function headLines(bytes: Uint8Array): string[] {
  const text = bytesToByteString(bytes);
  if (!text.endsWith("\r\n\r\n")) throw malformed("it does not end with an empty line");
  const lines = text.slice(0, -4).split("\r\n");
  for (const line of lines) {
    if (line.includes("\r") || line.includes("\n")) {
      throw malformed("a line ends in a bare CR or LF");
    }
  }
  return lines;
}

/**
 * Parses one field line `name: value` (RFC 9112 §5).
 *
 * @throws {HttpRelayError} `obs-fold` for a continuation line, `malformed-head` otherwise.
 */
export function parseFieldLine(line: string): HeaderField {
  if (line.startsWith(" ") || line.startsWith("\t")) {
    throw new HttpRelayError(
      "obs-fold",
      "Cannot parse HTTP head: obsolete line folding is not accepted",
    );
  }
  const colon = line.indexOf(":");
  if (colon <= 0) throw malformed("a header line has no field name");
  const name = line.slice(0, colon);
  if (!isToken(name)) throw malformed("a field name is not a token");
  const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
  if (!isFieldValue(value)) throw malformed(`field ${name} holds a control byte`);
  return [name, value];
}

/**
 * Parses field lines (headers or trailers).
 *
 * @throws {HttpRelayError} `too-many-headers` above {@linkcode MAX_HEADER_COUNT}.
 */
export function parseFieldLines(lines: readonly string[]): HeaderField[] {
  if (lines.length > MAX_HEADER_COUNT) {
    throw new HttpRelayError(
      "too-many-headers",
      `Cannot parse HTTP head: more than ${MAX_HEADER_COUNT} fields`,
    );
  }
  return lines.map(parseFieldLine);
}

function parseVersion(text: string): HttpVersion {
  if (text === "HTTP/1.1" || text === "HTTP/1.0") return text;
  if (/^HTTP\/\d(\.\d)?$/.test(text)) {
    throw new HttpRelayError(
      "unsupported-version",
      `Cannot relay ${text}: only HTTP/1.0 and HTTP/1.1 are supported`,
    );
  }
  throw malformed("the protocol version is not HTTP/x.y");
}

/**
 * Parses a request head (the bytes up to and including CRLF CRLF).
 *
 * @throws {HttpRelayError} For anything RFC 9112 does not allow (see the module doc).
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  const [requestLine = "", ...fieldLines] = headLines(bytes);
  const parts = requestLine.split(" ");
  if (parts.length !== 3) throw malformed("the request line is not `method SP target SP version`");
  const [method = "", target = "", versionText = ""] = parts;
  if (!isToken(method)) throw malformed("the method is not a token");
  if (target.length === 0 || !/^[\x21-\x7e]+$/.test(target)) {
    throw malformed("the request target holds bytes outside visible ASCII");
  }
  return {
    method,
    target,
    version: parseVersion(versionText),
    headers: parseFieldLines(fieldLines),
  };
}

/**
 * Parses a response head (the bytes up to and including CRLF CRLF).
 *
 * @throws {HttpRelayError} `malformed-head` or `unsupported-version`.
 */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  const [statusLine = "", ...fieldLines] = headLines(bytes);
  const match = /^(\S+) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (match === null) throw malformed("the status line is not `version SP status SP reason`");
  const reason = match[3] ?? "";
  if (!isFieldValue(reason)) throw malformed("the reason phrase holds a control byte");
  return {
    version: parseVersion(match[1]!),
    status: Number(match[2]),
    reason,
    headers: parseFieldLines(fieldLines),
  };
}

function serializeFields(startLine: string, headers: readonly HeaderField[]): Uint8Array {
  let text = startLine + "\r\n";
  for (const [name, value] of headers) text += `${name}: ${value}\r\n`;
  return byteStringToBytes(text + "\r\n");
}

/** Serializes a request head, CRLF CRLF included. */
export function serializeRequestHead(head: RequestHead): Uint8Array {
  return serializeFields(`${head.method} ${head.target} ${head.version}`, head.headers);
}

/** Serializes a response head, CRLF CRLF included. */
export function serializeResponseHead(head: ResponseHead): Uint8Array {
  return serializeFields(`${head.version} ${head.status} ${head.reason}`, head.headers);
}

/** Every value of the field `name` (case-insensitive), in order. */
export function headerValues(headers: readonly HeaderField[], name: string): string[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

/** The values of `name` joined by ", " (RFC 9110 §5.3), or undefined if absent. */
export function headerValue(headers: readonly HeaderField[], name: string): string | undefined {
  const values = headerValues(headers, name);
  return values.length === 0 ? undefined : values.join(", ");
}

/** The comma-separated list elements of `name`, trimmed and lowercased, empties dropped. */
export function headerTokens(headers: readonly HeaderField[], name: string): string[] {
  return headerValues(headers, name)
    .flatMap((v) => v.split(","))
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
}

/** True when the list header `name` holds `token` (case-insensitive). */
export function hasToken(headers: readonly HeaderField[], name: string, token: string): boolean {
  return headerTokens(headers, name).includes(token.toLowerCase());
}

/** The fields without any named `name` (case-insensitive). */
export function withoutHeader(headers: readonly HeaderField[], name: string): HeaderField[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() !== lower);
}

/** The fields with `name` set to `value` (replacing all previous values, appended last). */
export function withHeader(
  headers: readonly HeaderField[],
  name: string,
  value: string,
): HeaderField[] {
  return [...withoutHeader(headers, name), [name, value]];
}

/**
 * Rewrites the credentials of an `Authorization: Basic` value: decodes the base64
 * `user:password`, applies `replace` to the decoded byte string and re-encodes. Values that
 * are not Basic, or not valid base64, come back unchanged.
 */
export function rewriteBasicCredentials(
  value: string,
  replace: (decoded: string) => string,
): string {
  const match = /^(basic)([ ]+)([A-Za-z0-9+/\-._~]+=*)$/i.exec(value);
  if (match === null) return value;
  let decoded: string;
  try {
    decoded = atob(match[3]!);
  } catch {
    return value;
  }
  const rewritten = replace(decoded);
  if (rewritten === decoded) return value;
  return `${match[1]}${match[2]}${btoa(rewritten)}`;
}

/**
 * Narrows an `Accept-Encoding` value to the codings the relay can decode (so it can scrub
 * response bodies). `*` is dropped (it would admit any coding); an empty result becomes
 * `identity`, since an absent header would mean "any coding" (RFC 9110 §12.5.3).
 */
export function narrowAcceptEncoding(value: string | undefined): string {
  if (value === undefined) return "identity";
  const kept = value.split(",").map((e) => e.trim()).filter((element) => {
    const coding = element.split(";")[0]!.trim().toLowerCase();
    return ACCEPTED_CODINGS.includes(coding);
  });
  return kept.length === 0 ? "identity" : kept.join(", ");
}

/**
 * True when a request body of this Content-Type is substituted as text: text/*, JSON, XML,
 * form data, multipart form data, `+json`/`+xml` types, and a missing Content-Type.
 */
export function isTextualContentType(value: string | undefined): boolean {
  if (value === undefined) return true;
  const mediaType = value.split(";")[0]!.trim().toLowerCase();
  if (mediaType.startsWith("text/")) return true;
  if (TEXTUAL_MEDIA_TYPES.includes(mediaType)) return true;
  return TEXTUAL_MEDIA_SUFFIXES.some((suffix) => mediaType.endsWith(suffix));
}

/** The Content-Length of a message, null if absent; all values must agree. */
function contentLength(headers: readonly HeaderField[]): number | null {
  const values = headerTokens(headers, "content-length");
  if (values.length === 0) {
    if (headerValues(headers, "content-length").length > 0) {
      throw new HttpRelayError("bad-framing", "Cannot frame HTTP body: Content-Length is empty");
    }
    return null;
  }
  const first = values[0]!;
  if (!values.every((v) => v === first)) {
    throw new HttpRelayError(
      "bad-framing",
      "Cannot frame HTTP body: Content-Length values disagree",
    );
  }
  if (!/^\d+$/.test(first) || first.length > MAX_CONTENT_LENGTH_DIGITS) {
    throw new HttpRelayError(
      "bad-framing",
      "Cannot frame HTTP body: Content-Length is not a decimal length",
    );
  }
  return Number(first);
}

/**
 * How a request body is delimited (RFC 9112 §6.3, strict: no guessing).
 *
 * @throws {HttpRelayError} `bad-framing` for both Content-Length and Transfer-Encoding, a bad
 * length or Transfer-Encoding in HTTP/1.0; `unsupported-transfer-coding` for anything but
 * `chunked`.
 */
export function requestBodyFraming(head: RequestHead): BodyFraming {
  const transferCodings = headerTokens(head.headers, "transfer-encoding");
  const length = contentLength(head.headers);
  if (transferCodings.length > 0 || headerValues(head.headers, "transfer-encoding").length > 0) {
    if (head.version === "HTTP/1.0") {
      throw new HttpRelayError(
        "bad-framing",
        "Cannot frame HTTP body: Transfer-Encoding in an HTTP/1.0 request",
      );
    }
    if (length !== null) {
      throw new HttpRelayError(
        "bad-framing",
        "Cannot frame HTTP body: both Content-Length and Transfer-Encoding",
      );
    }
    if (transferCodings.length !== 1 || transferCodings[0] !== "chunked") {
      throw new HttpRelayError(
        "unsupported-transfer-coding",
        "Cannot frame HTTP body: only the chunked transfer coding is supported",
      );
    }
    return { kind: "chunked" };
  }
  if (length === null || length === 0) return { kind: "none" };
  return { kind: "length", length };
}

/**
 * How a response body is delimited (RFC 9112 §6.3), given the method of its request.
 *
 * @throws {HttpRelayError} `bad-framing` for a bad Content-Length; `unsupported-transfer-coding`
 * for transfer codings other than a lone `chunked`.
 */
export function responseBodyFraming(head: ResponseHead, requestMethod: string): BodyFraming {
  if (
    requestMethod === "HEAD" || head.status < 200 || head.status === HttpStatus.NO_CONTENT ||
    head.status === HttpStatus.NOT_MODIFIED
  ) {
    return { kind: "none" };
  }
  const transferCodings = headerTokens(head.headers, "transfer-encoding");
  if (transferCodings.length > 0) {
    if (transferCodings.length !== 1 || transferCodings[0] !== "chunked") {
      // A transfer coding we would have to decode to scrub: refuse rather than leak.
      throw new HttpRelayError(
        "unsupported-transfer-coding",
        "Cannot frame HTTP response: only the chunked transfer coding is supported",
      );
    }
    return { kind: "chunked" };
  }
  const length = contentLength(head.headers);
  if (length === null) return { kind: "close" };
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}
