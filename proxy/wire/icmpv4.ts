/**
 * ICMPv4 (RFC 792): echo request/reply and destination unreachable. Other types parse as
 * "unsupported" and are dropped.
 *
 * @module
 */

import { WireError } from "./error.ts";
import { checksum, type ChecksumMode } from "./checksum.ts";
import { IcmpType } from "./constants.ts";

/** Field offsets (RFC 792). */
const field = {
  TYPE: 0,
  CODE: 1,
  CHECKSUM: 2,
  /** Echo: identifier; unreachable: unused. */
  IDENT: 4,
  /** Echo: sequence number; unreachable: unused (RFC 1191 puts the next-hop MTU here). */
  SEQUENCE: 6,
} as const;

/** Length of the ICMP header. */
export const ICMP_HEADER_LEN: number = field.SEQUENCE + 2;
/** Bytes of the offending datagram quoted after its IP header in an error (RFC 792). */
export const ICMP_QUOTE_LEN = 8;

/** View over an ICMPv4 message. */
export class Icmpv4Packet {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps an output buffer without checks. */
  static newUnchecked(buffer: Uint8Array): Icmpv4Packet {
    return new Icmpv4Packet(buffer);
  }

  /** Wraps untrusted bytes, checking the header fits. */
  static newChecked(buffer: Uint8Array): Icmpv4Packet {
    const p = new Icmpv4Packet(buffer);
    p.checkLen();
    return p;
  }

  /** Throws when the buffer is shorter than the header. */
  checkLen(): void {
    if (this.buffer.length < ICMP_HEADER_LEN) {
      throw new WireError(
        "truncated",
        "icmpv4",
        "header",
        `needs ${ICMP_HEADER_LEN} bytes, got ${this.buffer.length}`,
      );
    }
  }

  /** Message type. */
  get type(): number {
    return this.buffer[field.TYPE]!;
  }
  set type(v: number) {
    this.buffer[field.TYPE] = v;
  }
  /** Message code. */
  get code(): number {
    return this.buffer[field.CODE]!;
  }
  set code(v: number) {
    this.buffer[field.CODE] = v;
  }
  /** Checksum over the whole message. */
  get checksum(): number {
    return this.#view.getUint16(field.CHECKSUM);
  }
  set checksum(v: number) {
    this.#view.setUint16(field.CHECKSUM, v);
  }
  /** Echo identifier. */
  get ident(): number {
    return this.#view.getUint16(field.IDENT);
  }
  set ident(v: number) {
    this.#view.setUint16(field.IDENT, v);
  }
  /** Echo sequence number. */
  get sequence(): number {
    return this.#view.getUint16(field.SEQUENCE);
  }
  set sequence(v: number) {
    this.#view.setUint16(field.SEQUENCE, v);
  }
  /** Data after the header (a view). */
  get data(): Uint8Array {
    return this.buffer.subarray(ICMP_HEADER_LEN);
  }
  /** True when the checksum over the message is correct. */
  verifyChecksum(): boolean {
    return checksum(this.buffer) === 0;
  }
  /** Computes and stores the checksum. */
  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = checksum(this.buffer);
  }
}

/** A valid ICMPv4 message this stack handles. */
export type Icmpv4Repr =
  | { kind: "echo-request"; ident: number; sequence: number; data: Uint8Array }
  | { kind: "echo-reply"; ident: number; sequence: number; data: Uint8Array }
  | { kind: "dest-unreachable"; code: number; data: Uint8Array };

/** Parses, emits and sizes ICMPv4 messages. */
export const Icmpv4Repr = {
  /** Verifies the checksum (unless ignored) and reads a checked message. */
  parse(p: Icmpv4Packet, mode: ChecksumMode = "verify"): Icmpv4Repr {
    if (mode === "verify" && !p.verifyChecksum()) {
      throw new WireError(
        "checksum",
        "icmpv4",
        "checksum",
        `0x${p.checksum.toString(16)} does not match the message`,
      );
    }
    switch (p.type) {
      case IcmpType.ECHO_REQUEST:
      case IcmpType.ECHO_REPLY:
        if (p.code !== 0) {
          throw new WireError("malformed", "icmpv4", "code", `is ${p.code} for echo`);
        }
        return {
          kind: p.type === IcmpType.ECHO_REQUEST ? "echo-request" : "echo-reply",
          ident: p.ident,
          sequence: p.sequence,
          data: p.data,
        };
      case IcmpType.DEST_UNREACHABLE:
        return { kind: "dest-unreachable", code: p.code, data: p.data };
      default:
        throw new WireError("unsupported", "icmpv4", "type", `is ${p.type}`);
    }
  },
  /** Length of the emitted message. */
  bufferLen(r: Icmpv4Repr): number {
    return ICMP_HEADER_LEN + r.data.length;
  },
  /** Writes the message and its checksum into a buffer of exactly `bufferLen(r)` bytes. */
  emit(r: Icmpv4Repr, p: Icmpv4Packet): void {
    switch (r.kind) {
      case "echo-request":
      case "echo-reply":
        p.type = r.kind === "echo-request" ? IcmpType.ECHO_REQUEST : IcmpType.ECHO_REPLY;
        p.code = 0;
        p.ident = r.ident;
        p.sequence = r.sequence;
        break;
      case "dest-unreachable":
        p.type = IcmpType.DEST_UNREACHABLE;
        p.code = r.code;
        p.ident = 0;
        p.sequence = 0;
        break;
    }
    p.buffer.set(r.data, ICMP_HEADER_LEN);
    p.fillChecksum();
  },
};
