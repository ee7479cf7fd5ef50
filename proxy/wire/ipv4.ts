/**
 * IPv4 packets (RFC 791). Fragments are rejected as "unsupported": the guest sets DF on TCP and
 * its MTU matches ours, so a fragment is never needed on this point-to-point link.
 *
 * @module
 */

import { WireError } from "./error.ts";
import { checksum, type ChecksumMode } from "./checksum.ts";

/** Field offsets (RFC 791 section 3.1). */
const field = {
  VER_IHL: 0,
  DSCP_ECN: 1,
  LENGTH: 2,
  IDENT: 4,
  FLAGS_FRAGMENT: 6,
  TTL: 8,
  PROTOCOL: 9,
  CHECKSUM: 10,
  SOURCE: 12,
  DESTINATION: 16,
} as const;

/** Length of a header without options. */
export const IPV4_HEADER_LEN: number = field.DESTINATION + 4;
const FLAG_DONT_FRAGMENT = 0x4000;
const FLAG_MORE_FRAGMENTS = 0x2000;
const FRAGMENT_OFFSET_MASK = 0x1fff;
/** TTL of packets we send. */
export const DEFAULT_TTL = 64;

/** View over an IPv4 packet. */
export class Ipv4Packet {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps an output buffer without checks. */
  static newUnchecked(buffer: Uint8Array): Ipv4Packet {
    return new Ipv4Packet(buffer);
  }

  /** Wraps untrusted bytes; checks header length and total length against the buffer. */
  static newChecked(buffer: Uint8Array): Ipv4Packet {
    const p = new Ipv4Packet(buffer);
    p.checkLen();
    return p;
  }

  /** Throws unless the buffer holds the header (with options) and `total_length` bytes. */
  checkLen(): void {
    const len = this.buffer.length;
    if (len < IPV4_HEADER_LEN) {
      throw new WireError(
        "truncated",
        "ipv4",
        "header",
        `needs ${IPV4_HEADER_LEN} bytes, got ${len}`,
      );
    }
    if (this.version !== 4) {
      throw new WireError("malformed", "ipv4", "version", `is ${this.version}, not 4`);
    }
    const hl = this.headerLen;
    if (hl < IPV4_HEADER_LEN) {
      throw new WireError("malformed", "ipv4", "ihl", `is ${hl} bytes, below ${IPV4_HEADER_LEN}`);
    }
    const total = this.totalLen;
    if (total < hl) {
      throw new WireError(
        "malformed",
        "ipv4",
        "total_length",
        `is ${total}, below header length ${hl}`,
      );
    }
    if (total > len) {
      throw new WireError("truncated", "ipv4", "total_length", `is ${total}, buffer has ${len}`);
    }
  }

  /** IP version (4). */
  get version(): number {
    return this.buffer[field.VER_IHL]! >> 4;
  }
  /** Header length in bytes (IHL * 4). */
  get headerLen(): number {
    return (this.buffer[field.VER_IHL]! & 0x0f) * 4;
  }
  /** Sets version 4 and the header length in bytes. */
  setVersionAndHeaderLen(headerLen: number): void {
    this.buffer[field.VER_IHL] = 0x40 | (headerLen / 4);
  }
  /** DSCP and ECN byte. */
  get dscpEcn(): number {
    return this.buffer[field.DSCP_ECN]!;
  }
  set dscpEcn(v: number) {
    this.buffer[field.DSCP_ECN] = v;
  }
  /** Total length (header and payload). */
  get totalLen(): number {
    return this.#view.getUint16(field.LENGTH);
  }
  set totalLen(v: number) {
    this.#view.setUint16(field.LENGTH, v);
  }
  /** Identification. */
  get ident(): number {
    return this.#view.getUint16(field.IDENT);
  }
  set ident(v: number) {
    this.#view.setUint16(field.IDENT, v);
  }
  /** Flags and fragment offset word. */
  get flagsFragment(): number {
    return this.#view.getUint16(field.FLAGS_FRAGMENT);
  }
  set flagsFragment(v: number) {
    this.#view.setUint16(field.FLAGS_FRAGMENT, v);
  }
  /** More-fragments flag or a non-zero offset. */
  get isFragment(): boolean {
    const f = this.flagsFragment;
    return (f & FLAG_MORE_FRAGMENTS) !== 0 || (f & FRAGMENT_OFFSET_MASK) !== 0;
  }
  /** Time to live. */
  get ttl(): number {
    return this.buffer[field.TTL]!;
  }
  set ttl(v: number) {
    this.buffer[field.TTL] = v;
  }
  /** Payload protocol number. */
  get protocol(): number {
    return this.buffer[field.PROTOCOL]!;
  }
  set protocol(v: number) {
    this.buffer[field.PROTOCOL] = v;
  }
  /** Header checksum. */
  get checksum(): number {
    return this.#view.getUint16(field.CHECKSUM);
  }
  set checksum(v: number) {
    this.#view.setUint16(field.CHECKSUM, v);
  }
  /** Source address. */
  get source(): number {
    return this.#view.getUint32(field.SOURCE);
  }
  set source(v: number) {
    this.#view.setUint32(field.SOURCE, v);
  }
  /** Destination address. */
  get destination(): number {
    return this.#view.getUint32(field.DESTINATION);
  }
  set destination(v: number) {
    this.#view.setUint32(field.DESTINATION, v);
  }
  /** True when the header checksum is correct. */
  verifyChecksum(): boolean {
    return checksum(this.buffer.subarray(0, this.headerLen)) === 0;
  }
  /** Computes and stores the header checksum. */
  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = checksum(this.buffer.subarray(0, this.headerLen));
  }
  /** Payload bytes up to `total_length` (Ethernet padding excluded). A view. */
  get payload(): Uint8Array {
    return this.buffer.subarray(this.headerLen, this.totalLen);
  }
}

/** A valid, unfragmented IPv4 header. */
export interface Ipv4Repr {
  /** Source address. */
  source: number;
  /** Destination address. */
  destination: number;
  /** Payload protocol. */
  protocol: number;
  /** Payload length in bytes. */
  payloadLen: number;
  /** Time to live. */
  ttl: number;
}

/** Parses, emits and sizes IPv4 headers. */
export const Ipv4Repr = {
  /** Validates checksum (unless ignored) and fragmentation, then reads the header. */
  parse(p: Ipv4Packet, mode: ChecksumMode = "verify"): Ipv4Repr {
    if (mode === "verify" && !p.verifyChecksum()) {
      throw new WireError(
        "checksum",
        "ipv4",
        "checksum",
        `0x${p.checksum.toString(16)} does not match the header`,
      );
    }
    if (p.isFragment) {
      throw new WireError("unsupported", "ipv4", "flags_fragment", "marks a fragment");
    }
    return {
      source: p.source,
      destination: p.destination,
      protocol: p.protocol,
      payloadLen: p.totalLen - p.headerLen,
      ttl: p.ttl,
    };
  },
  /** Header length of packets we emit (no options). */
  bufferLen(): number {
    return IPV4_HEADER_LEN;
  },
  /** Writes a header (DF set, checksum filled) into a buffer holding header and payload. */
  emit(r: Ipv4Repr, p: Ipv4Packet): void {
    p.setVersionAndHeaderLen(IPV4_HEADER_LEN);
    p.dscpEcn = 0;
    p.totalLen = IPV4_HEADER_LEN + r.payloadLen;
    p.ident = 0;
    p.flagsFragment = FLAG_DONT_FRAGMENT;
    p.ttl = r.ttl;
    p.protocol = r.protocol;
    p.source = r.source;
    p.destination = r.destination;
    p.fillChecksum();
  },
};
