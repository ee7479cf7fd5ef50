/**
 * Reads the name a connection's first bytes ask for: the server name (SNI, RFC 6066 section 3)
 * of a TLS ClientHello (RFC 8446 section 4.1.2), or the Host header of an HTTP/1.x request.
 * With an allow-list, that name must be allowed too, so an allowed address cannot carry a
 * request for another host. Pure and bounded: at most `SNIFF_MAX_BYTES` are looked at.
 *
 * @module
 */

/** Most bytes looked at before giving up on finding a name. */
export const SNIFF_MAX_BYTES = 16 * 1024 + 5;

/** What the first bytes of a connection are. */
export type SniffResult =
  /** Not enough bytes yet to tell (call again with more, up to SNIFF_MAX_BYTES). */
  | { kind: "need-more" }
  /** A TLS ClientHello; `serverName` when it carries SNI. */
  | { kind: "tls"; serverName?: string }
  /** An HTTP/1.x request; `host` from its Host header (port stripped, lower case). */
  | { kind: "http"; host?: string }
  /** Something else (a server-first or binary protocol). */
  | { kind: "other" };

/** TLS record and handshake layout (RFC 8446 sections 5.1 and 4). */
const tls = {
  RECORD_HEADER_LEN: 5,
  CONTENT_HANDSHAKE: 0x16,
  HANDSHAKE_CLIENT_HELLO: 1,
  EXTENSION_SERVER_NAME: 0,
  NAME_TYPE_HOST: 0,
  RANDOM_LEN: 32,
} as const;

const HTTP_METHODS = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE"];

/** Classifies the first bytes the guest sent on a connection. */
export function sniffFirstBytes(bytes: Uint8Array): SniffResult {
  if (bytes.length === 0) return { kind: "need-more" };
  if (bytes[0] === tls.CONTENT_HANDSHAKE) return sniffTls(bytes);
  return sniffHttp(bytes);
}

function sniffTls(b: Uint8Array): SniffResult {
  if (b.length < tls.RECORD_HEADER_LEN) return { kind: "need-more" };
  if (b[1] !== 3) return { kind: "other" };
  const recordLen = (b[3]! << 8) | b[4]!;
  const end = tls.RECORD_HEADER_LEN + recordLen;
  if (end > SNIFF_MAX_BYTES) return { kind: "tls" };
  if (b.length < end) return { kind: "need-more" };
  let p: number = tls.RECORD_HEADER_LEN;
  const need = (n: number) => p + n <= end;
  if (!need(4) || b[p] !== tls.HANDSHAKE_CLIENT_HELLO) return { kind: "tls" };
  p += 4; // handshake type and 24-bit length (bounded by the record instead)
  if (!need(2 + tls.RANDOM_LEN + 1)) return { kind: "tls" };
  p += 2 + tls.RANDOM_LEN; // legacy_version, random
  p += 1 + b[p]!; // legacy_session_id
  if (!need(2)) return { kind: "tls" };
  p += 2 + ((b[p]! << 8) | b[p + 1]!); // cipher_suites
  if (!need(1)) return { kind: "tls" };
  p += 1 + b[p]!; // legacy_compression_methods
  if (!need(2)) return { kind: "tls" };
  const extEnd = Math.min(end, p + 2 + ((b[p]! << 8) | b[p + 1]!));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
    if (p + len > extEnd) break;
    if (type === tls.EXTENSION_SERVER_NAME && len >= 5) {
      // server_name_list: u16 length, then (name_type u8, host_name u16-length-prefixed).
      let q = p + 2;
      const listEnd = Math.min(p + len, q + ((b[p]! << 8) | b[p + 1]!));
      while (q + 3 <= listEnd) {
        const nameType = b[q]!;
        const nameLen = (b[q + 1]! << 8) | b[q + 2]!;
        q += 3;
        if (q + nameLen > listEnd) break;
        if (nameType === tls.NAME_TYPE_HOST) {
          const name = new TextDecoder().decode(b.subarray(q, q + nameLen)).toLowerCase();
          return { kind: "tls", serverName: name.replace(/\.$/, "") };
        }
        q += nameLen;
      }
    }
    p += len;
  }
  return { kind: "tls" };
}

function sniffHttp(b: Uint8Array): SniffResult {
  const head = new TextDecoder("latin1").decode(b.subarray(0, Math.min(b.length, SNIFF_MAX_BYTES)));
  const space = head.indexOf(" ");
  const method = space < 0 ? head : head.slice(0, space);
  if (space < 0) {
    // A prefix of a method name so far?
    return HTTP_METHODS.some((m) => m.startsWith(method)) && head.length < 8
      ? { kind: "need-more" }
      : { kind: "other" };
  }
  if (!HTTP_METHODS.includes(method)) return { kind: "other" };
  const endOfHeaders = head.indexOf("\r\n\r\n");
  if (endOfHeaders < 0 && b.length < SNIFF_MAX_BYTES) return { kind: "need-more" };
  const lines = head.slice(0, endOfHeaders < 0 ? head.length : endOfHeaders).split("\r\n");
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === "host") {
      let host = line.slice(colon + 1).trim().toLowerCase();
      if (host.startsWith("[")) return { kind: "http", host: host.slice(0, host.indexOf("]") + 1) };
      const portAt = host.lastIndexOf(":");
      if (portAt >= 0) host = host.slice(0, portAt);
      return { kind: "http", host: host.replace(/\.$/, "") };
    }
  }
  return { kind: "http" };
}
