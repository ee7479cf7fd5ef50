/**
 * What a connection's first bytes are, without I/O: a TLS ClientHello (RFC 8446 section 4.1.2)
 * and its server name (SNI, RFC 6066 section 3), an HTTP/1.x request, or something else.
 *
 * The ClientHello is reassembled across TLS records (a handshake message may be split over any
 * number of them, RFC 8446 section 5.1), up to {@linkcode MAX_CLIENT_HELLO_BYTES}: a guest that
 * splits it to hide the name gets it read all the same, and one that makes it too large, puts
 * another record type in the middle, or repeats the server name, gets a reason to refuse.
 *
 * Deciding "HTTP" errs on the side of yes: a first line that an HTTP server could take as a
 * request line with a version (any token, any target, `HTTP/` in any case, after empty lines
 * servers skip) is HTTP and must then pass the strict head parser; a first line that is text
 * without a version (SMTP's `EHLO`, an HTTP/0.9 request, which carries no Host) or bytes no
 * request line holds (control bytes) are "other".
 *
 * @module
 */

/** Largest ClientHello handshake message read (real ones are 0.5-2 KiB; 16 KiB with padding). */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;
/** Most wire bytes (records with their headers) read to reassemble one ClientHello. */
export const MAX_CLIENT_HELLO_WIRE_BYTES = 2 * MAX_CLIENT_HELLO_BYTES;
/** Longest first line looked at before deciding it is not an HTTP request line. */
export const MAX_FIRST_LINE_BYTES = 16 * 1024;

/** TLS record and handshake layout (RFC 8446 sections 5.1 and 4). */
const tls = {
  RECORD_HEADER_LEN: 5,
  /** TLSPlaintext.length must not exceed 2^14. */
  MAX_RECORD_LEN: 16384,
  CONTENT_HANDSHAKE: 0x16,
  HANDSHAKE_HEADER_LEN: 4,
  HANDSHAKE_CLIENT_HELLO: 1,
  EXTENSION_SERVER_NAME: 0,
  NAME_TYPE_HOST: 0,
  RANDOM_LEN: 32,
} as const;

const CR = 0x0d;
const LF = 0x0a;

/** What the first bytes of a connection are. */
export type FirstBytesKind =
  /** Not enough bytes yet to tell. */
  | "need-more"
  /** A TLS handshake record (read the ClientHello with {@linkcode readClientHello}). */
  | "tls"
  /** An HTTP/1.x request line (check the head with the strict parser). */
  | "http"
  /** Something else: a server-first protocol's reply, or a binary protocol. */
  | "other";

/**
 * Classifies the first bytes the guest sent on a connection.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/_assert.ts";
 * const enc = (s: string) => new TextEncoder().encode(s);
 * assertEquals(classifyFirstBytes(enc("GET / HTTP/1.1\r\n")), "http");
 * assertEquals(classifyFirstBytes(enc("GET / HT")), "need-more");
 * assertEquals(classifyFirstBytes(enc("EHLO me\r\n")), "other");
 * ```
 */
export function classifyFirstBytes(bytes: Uint8Array): FirstBytesKind {
  if (bytes.length === 0) return "need-more";
  if (bytes[0] === tls.CONTENT_HANDSHAKE) return "tls";
  // Servers skip empty lines before a request line (RFC 9112 section 2.2).
  let start = 0;
  while (start < bytes.length && (bytes[start] === CR || bytes[start] === LF)) start++;
  const lineEnd = bytes.indexOf(LF, start);
  const end = lineEnd < 0 ? bytes.length : lineEnd;
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    // No request line holds control bytes (HTAB and the CR before LF aside).
    if ((c < 0x20 && c !== 0x09 && c !== CR) || c === 0x7f) return "other";
  }
  if (lineEnd < 0) {
    return bytes.length - start < MAX_FIRST_LINE_BYTES ? "need-more" : "other";
  }
  let line = "";
  for (let i = start; i < end; i++) line += String.fromCharCode(bytes[i]!);
  return /\sHTTP\//i.test(line) ? "http" : "other";
}

/** What {@linkcode readClientHello} found. */
export type ClientHelloResult =
  /** The hello is not complete yet. */
  | { kind: "need-more" }
  /**
   * A complete ClientHello. `serverName` is the SNI host name as sent (a byte string, not yet
   * normalised), absent when there is none; `end` is the offset just past the record that
   * completed it.
   */
  | { kind: "hello"; serverName?: string; end: number }
  /** Not a ClientHello the name can be read from, and why. */
  | { kind: "bad"; reason: string };

function u16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}

/**
 * Reads the ClientHello at the start of `bytes`, reassembling its handshake message across
 * as many TLS records as it takes.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/_assert.ts";
 * assertEquals(readClientHello(new Uint8Array([0x16, 3, 1])).kind, "need-more");
 * assertEquals(readClientHello(new Uint8Array([0x17, 3, 3, 0, 1, 0])).kind, "bad");
 * ```
 */
export function readClientHello(bytes: Uint8Array): ClientHelloResult {
  const fragments: Uint8Array[] = [];
  let have = 0;
  let helloLen = -1;
  let p = 0;
  for (;;) {
    if (p >= MAX_CLIENT_HELLO_WIRE_BYTES) {
      return { kind: "bad", reason: `ClientHello spread over more than ${p} bytes of records` };
    }
    if (bytes.length < p + tls.RECORD_HEADER_LEN) return { kind: "need-more" };
    if (bytes[p] !== tls.CONTENT_HANDSHAKE) {
      return { kind: "bad", reason: `record of type ${bytes[p]} before the ClientHello ended` };
    }
    if (bytes[p + 1] !== 3) return { kind: "bad", reason: "record version is not TLS" };
    const len = u16(bytes, p + 3);
    if (len === 0 || len > tls.MAX_RECORD_LEN) {
      return { kind: "bad", reason: `handshake record of ${len} bytes` };
    }
    const end = p + tls.RECORD_HEADER_LEN + len;
    if (bytes.length < end) return { kind: "need-more" };
    fragments.push(bytes.subarray(p + tls.RECORD_HEADER_LEN, end));
    have += len;
    p = end;
    if (helloLen < 0 && have >= tls.HANDSHAKE_HEADER_LEN) {
      const head = concat(fragments, tls.HANDSHAKE_HEADER_LEN);
      if (head[0] !== tls.HANDSHAKE_CLIENT_HELLO) {
        return { kind: "bad", reason: `handshake message of type ${head[0]}, not a ClientHello` };
      }
      helloLen = (head[1]! << 16) | u16(head, 2);
      if (helloLen > MAX_CLIENT_HELLO_BYTES) {
        return { kind: "bad", reason: `ClientHello of ${helloLen} bytes (limit 32 KiB)` };
      }
    }
    if (helloLen >= 0 && have >= tls.HANDSHAKE_HEADER_LEN + helloLen) {
      const message = concat(fragments, tls.HANDSHAKE_HEADER_LEN + helloLen);
      const body = message.subarray(tls.HANDSHAKE_HEADER_LEN);
      const found = serverNameOf(body);
      if (typeof found === "object") return found;
      return found === undefined
        ? { kind: "hello", end: p }
        : { kind: "hello", serverName: found, end: p };
    }
  }
}

function concat(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let off = 0;
  for (const part of parts) {
    if (off >= n) break;
    const take = part.subarray(0, n - off);
    out.set(take, off);
    off += take.length;
  }
  return out;
}

/**
 * The SNI host name of a ClientHello body (a byte string), undefined when it has none, or a
 * `bad` result for a body whose lengths do not add up or that names more than one server.
 */
function serverNameOf(b: Uint8Array): string | undefined | { kind: "bad"; reason: string } {
  const bad = (what: string) => ({ kind: "bad" as const, reason: `ClientHello ${what}` });
  const end = b.length;
  let p = 2 + tls.RANDOM_LEN; // legacy_version, random
  if (p + 1 > end) return bad("is cut short");
  p += 1 + b[p]!; // legacy_session_id
  if (p + 2 > end) return bad("is cut short");
  p += 2 + u16(b, p); // cipher_suites
  if (p + 1 > end) return bad("is cut short");
  p += 1 + b[p]!; // legacy_compression_methods
  if (p === end) return undefined; // no extensions at all (allowed before TLS 1.3)
  if (p + 2 > end) return bad("is cut short");
  const extEnd = p + 2 + u16(b, p);
  if (extEnd !== end) return bad("extension lengths do not add up");
  p += 2;
  let name: string | undefined;
  let seen = false;
  while (p < extEnd) {
    if (p + 4 > extEnd) return bad("extension lengths do not add up");
    const type = u16(b, p);
    const len = u16(b, p + 2);
    p += 4;
    if (p + len > extEnd) return bad("extension lengths do not add up");
    if (type === tls.EXTENSION_SERVER_NAME) {
      // A repeated extension is a decode error (RFC 8446 section 4.2); servers differ on which
      // copy they would read.
      if (seen) return bad("repeats the server_name extension");
      seen = true;
      if (len < 2 || u16(b, p) !== len - 2) return bad("server_name lengths do not add up");
      let q = p + 2;
      while (q < p + len) {
        if (q + 3 > p + len) return bad("server_name lengths do not add up");
        const nameType = b[q]!;
        const nameLen = u16(b, q + 1);
        q += 3;
        if (q + nameLen > p + len) return bad("server_name lengths do not add up");
        if (nameType === tls.NAME_TYPE_HOST) {
          if (name !== undefined) return bad("names more than one server");
          name = "";
          for (let i = q; i < q + nameLen; i++) name += String.fromCharCode(b[i]!);
        }
        q += nameLen;
      }
    }
    p += len;
  }
  return name;
}
