/**
 * DNS messages (RFC 1035 section 4): parsing with name compression (pointers must point
 * backwards, so loops are impossible; names capped at 255 bytes, labels at 63) and building the
 * answers our server sends (A records, NXDOMAIN, empty NOERROR, FORMERR, NOTIMP).
 *
 * @module
 */

import { WireError } from "../wire/error.ts";

/** Field offsets of the header (RFC 1035 4.1.1). */
const field = {
  ID: 0,
  FLAGS: 2,
  QDCOUNT: 4,
  ANCOUNT: 6,
  NSCOUNT: 8,
  ARCOUNT: 10,
} as const;

/** Length of the header. */
export const DNS_HEADER_LEN: number = field.ARCOUNT + 2;
/** Longest name in wire form (RFC 1035 2.3.4). */
export const DNS_MAX_NAME_LEN = 255;
/** Longest label (RFC 1035 2.3.4). */
export const DNS_MAX_LABEL_LEN = 63;
/** Most records of one section we parse (our clients ask one question). */
export const DNS_MAX_RECORDS = 64;
/** Largest message we parse (TCP length prefix is 16 bits). */
export const DNS_MAX_MESSAGE_LEN = 65535;

/** Record types (RFC 1035 3.2.2, RFC 3596). */
export const DnsType = { A: 1, CNAME: 5, PTR: 12, AAAA: 28, OPT: 41, ANY: 255 } as const;
/** Class IN. */
export const DNS_CLASS_IN = 1;
/** Response codes (RFC 1035 4.1.1). */
export const DnsRcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

const FLAG_QR = 0x8000;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const OPCODE_SHIFT = 11;

/** One question. */
export interface DnsQuestion {
  /** Lower-case name without the trailing dot. */
  name: string;
  /** Record type. */
  type: number;
  /** Class. */
  class: number;
}

/** One resource record (answers parsed by tests and tools; we only emit A). */
export interface DnsRecord {
  /** Lower-case owner name. */
  name: string;
  /** Record type. */
  type: number;
  /** Class. */
  class: number;
  /** Time to live in seconds. */
  ttl: number;
  /** Record data (a copy). */
  data: Uint8Array;
}

/** A parsed message. */
export interface DnsMessage {
  /** Transaction id. */
  id: number;
  /** Header flags word. */
  flags: number;
  /** Questions. */
  questions: DnsQuestion[];
  /** Answer records. */
  answers: DnsRecord[];
  /** The question section's raw bytes (echoed in replies). */
  questionBytes: Uint8Array;
}

/** Response code of a parsed message. */
export function rcodeOf(msg: DnsMessage): number {
  return msg.flags & 0x0f;
}

/** Opcode of a parsed message. */
export function opcodeOf(msg: DnsMessage): number {
  return (msg.flags >> OPCODE_SHIFT) & 0x0f;
}

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it. */
export function readName(bytes: Uint8Array, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let wireLen = 0;
  let pos = offset;
  let next = -1;
  // Each pointer must go strictly backwards, so this loop ends within bytes.length steps.
  let limit = offset;
  for (;;) {
    if (pos >= bytes.length) {
      throw new WireError("truncated", "dns", "name", `runs past the end at ${pos}`);
    }
    const len = bytes[pos]!;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= bytes.length) {
        throw new WireError("truncated", "dns", "name", "pointer cut short");
      }
      const target = ((len & 0x3f) << 8) | bytes[pos + 1]!;
      if (target >= limit) {
        throw new WireError(
          "malformed",
          "dns",
          "name",
          `pointer to ${target} does not point backwards`,
        );
      }
      if (next < 0) next = pos + 2;
      pos = target;
      limit = target;
      continue;
    }
    if ((len & 0xc0) !== 0) {
      throw new WireError("malformed", "dns", "name", `label type 0x${len.toString(16)}`);
    }
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    if (len > DNS_MAX_LABEL_LEN) {
      throw new WireError("malformed", "dns", "name", `label of ${len} bytes`);
    }
    if (pos + 1 + len > bytes.length) {
      throw new WireError("truncated", "dns", "name", "label runs past the end");
    }
    wireLen += len + 1;
    if (wireLen + 1 > DNS_MAX_NAME_LEN) {
      throw new WireError("malformed", "dns", "name", "longer than 255 bytes");
    }
    let label = "";
    for (let i = pos + 1; i <= pos + len; i++) {
      const c = String.fromCharCode(bytes[i]!);
      // A dot or backslash inside a label is escaped (RFC 4343 presentation form), so the
      // joined name keeps its label boundaries and never passes for another name.
      label += c === "." || c === "\\" ? `\\${c}` : c;
    }
    labels.push(label.toLowerCase());
    pos += 1 + len;
  }
  return { name: labels.join("."), next };
}

/** Encodes a name without compression. Throws RangeError for an invalid name. */
export function encodeName(name: string): Uint8Array {
  const labels = name === "" ? [] : name.replace(/\.$/, "").split(".");
  const out: number[] = [];
  for (const l of labels) {
    if (l.length === 0 || l.length > DNS_MAX_LABEL_LEN) {
      throw new RangeError(`Cannot encode DNS name "${name}": label "${l}" has a bad length`);
    }
    out.push(l.length);
    for (let i = 0; i < l.length; i++) out.push(l.charCodeAt(i) & 0xff);
  }
  out.push(0);
  if (out.length > DNS_MAX_NAME_LEN) {
    throw new RangeError(`Cannot encode DNS name "${name}": too long`);
  }
  return new Uint8Array(out);
}

/** Parses a message (queries from the guest are untrusted; every count and length is capped). */
export function parseDnsMessage(bytes: Uint8Array): DnsMessage {
  if (bytes.length < DNS_HEADER_LEN) {
    throw new WireError(
      "truncated",
      "dns",
      "header",
      `needs ${DNS_HEADER_LEN} bytes, got ${bytes.length}`,
    );
  }
  if (bytes.length > DNS_MAX_MESSAGE_LEN) {
    throw new WireError("malformed", "dns", "length", "above 65535");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const qd = view.getUint16(field.QDCOUNT);
  const an = view.getUint16(field.ANCOUNT);
  if (qd > DNS_MAX_RECORDS) throw new WireError("malformed", "dns", "qdcount", `is ${qd}`);
  if (an > DNS_MAX_RECORDS) throw new WireError("malformed", "dns", "ancount", `is ${an}`);
  let pos: number = DNS_HEADER_LEN;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qd; i++) {
    const { name, next } = readName(bytes, pos);
    if (next + 4 > bytes.length) {
      throw new WireError("truncated", "dns", "question", "type/class cut short");
    }
    questions.push({ name, type: view.getUint16(next), class: view.getUint16(next + 2) });
    pos = next + 4;
  }
  const questionBytes = bytes.slice(DNS_HEADER_LEN, pos);
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an; i++) {
    const { name, next } = readName(bytes, pos);
    if (next + 10 > bytes.length) {
      throw new WireError("truncated", "dns", "answer", "header cut short");
    }
    const rdlen = view.getUint16(next + 8);
    if (next + 10 + rdlen > bytes.length) {
      throw new WireError("truncated", "dns", "rdlength", `is ${rdlen}`);
    }
    answers.push({
      name,
      type: view.getUint16(next),
      class: view.getUint16(next + 2),
      ttl: view.getUint32(next + 4),
      data: bytes.slice(next + 10, next + 10 + rdlen),
    });
    pos = next + 10 + rdlen;
  }
  return {
    id: view.getUint16(field.ID),
    flags: view.getUint16(field.FLAGS),
    questions,
    answers,
    questionBytes,
  };
}

/** What a reply carries. */
export interface DnsReplyOptions {
  /** Response code. */
  rcode: number;
  /** IPv4 addresses for A records (answering the first question). */
  addresses?: number[];
  /** TTL of the A records, seconds. */
  ttl?: number;
}

/** Builds a reply to `query`: its id, RD and opcode, its question section echoed. */
export function buildDnsReply(query: DnsMessage, opts: DnsReplyOptions): Uint8Array {
  const addrs = opts.addresses ?? [];
  const q = query.questionBytes;
  const out = new Uint8Array(DNS_HEADER_LEN + q.length + addrs.length * 16);
  const view = new DataView(out.buffer);
  view.setUint16(field.ID, query.id);
  const flags = FLAG_QR | (query.flags & (0x0f << OPCODE_SHIFT)) | (query.flags & FLAG_RD) |
    FLAG_RA | (opts.rcode & 0x0f);
  view.setUint16(field.FLAGS, flags);
  view.setUint16(field.QDCOUNT, query.questions.length);
  view.setUint16(field.ANCOUNT, addrs.length);
  out.set(q, DNS_HEADER_LEN);
  let pos = DNS_HEADER_LEN + q.length;
  for (const a of addrs) {
    view.setUint16(pos, 0xc000 | DNS_HEADER_LEN); // pointer to the first question's name
    view.setUint16(pos + 2, DnsType.A);
    view.setUint16(pos + 4, DNS_CLASS_IN);
    view.setUint32(pos + 6, opts.ttl ?? 0);
    view.setUint16(pos + 10, 4);
    view.setUint32(pos + 12, a >>> 0);
    pos += 16;
  }
  return out;
}

/** Builds a reply from just a header (for queries too broken to parse past it), or undefined. */
export function buildHeaderOnlyReply(bytes: Uint8Array, rcode: number): Uint8Array | undefined {
  if (bytes.length < DNS_HEADER_LEN) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(field.FLAGS) & FLAG_QR) return undefined; // never answer a response
  const out = new Uint8Array(DNS_HEADER_LEN);
  const o = new DataView(out.buffer);
  o.setUint16(field.ID, view.getUint16(field.ID));
  o.setUint16(field.FLAGS, FLAG_QR | (view.getUint16(field.FLAGS) & FLAG_RD) | FLAG_RA | rcode);
  return out;
}

/** Builds a query (used by tests and tools). */
export function buildDnsQuery(name: string, opts: { id: number; type: number }): Uint8Array {
  const { id, type } = opts;
  const n = encodeName(name);
  const out = new Uint8Array(DNS_HEADER_LEN + n.length + 4);
  const view = new DataView(out.buffer);
  view.setUint16(field.ID, id);
  view.setUint16(field.FLAGS, FLAG_RD);
  view.setUint16(field.QDCOUNT, 1);
  out.set(n, DNS_HEADER_LEN);
  view.setUint16(DNS_HEADER_LEN + n.length, type);
  view.setUint16(DNS_HEADER_LEN + n.length + 2, DNS_CLASS_IN);
  return out;
}

/** True when the message is a response (QR set). */
export function isResponse(msg: DnsMessage): boolean {
  return (msg.flags & FLAG_QR) !== 0;
}
