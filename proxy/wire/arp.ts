/**
 * ARP for IPv4 over Ethernet (RFC 826). Other hardware or protocol types are "unsupported".
 *
 * @module
 */

import { WireError } from "./error.ts";
import type { MacAddress } from "./address.ts";
import { EtherType } from "./constants.ts";

/** Field offsets (RFC 826, Ethernet/IPv4 sizes). */
const field = {
  HTYPE: 0,
  PTYPE: 2,
  HLEN: 4,
  PLEN: 5,
  OPER: 6,
  SHA: [8, 14],
  SPA: 14,
  THA: [18, 24],
  TPA: 24,
} as const;

/** Length of an Ethernet/IPv4 ARP packet. */
export const ARP_LEN: number = field.TPA + 4;
const HTYPE_ETHERNET = 1;

/** View over an ARP packet. */
export class ArpPacket {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps an output buffer of `ARP_LEN` bytes without checks. */
  static newUnchecked(buffer: Uint8Array): ArpPacket {
    return new ArpPacket(buffer);
  }

  /** Wraps untrusted bytes, checking the length. */
  static newChecked(buffer: Uint8Array): ArpPacket {
    const p = new ArpPacket(buffer);
    p.checkLen();
    return p;
  }

  /** Throws when the buffer is shorter than an Ethernet/IPv4 ARP packet. */
  checkLen(): void {
    if (this.buffer.length < ARP_LEN) {
      throw new WireError(
        "truncated",
        "arp",
        "tpa",
        `needs ${ARP_LEN} bytes, got ${this.buffer.length}`,
      );
    }
  }

  /** Hardware type. */
  get hardwareType(): number {
    return this.#view.getUint16(field.HTYPE);
  }
  set hardwareType(v: number) {
    this.#view.setUint16(field.HTYPE, v);
  }
  /** Protocol type. */
  get protocolType(): number {
    return this.#view.getUint16(field.PTYPE);
  }
  set protocolType(v: number) {
    this.#view.setUint16(field.PTYPE, v);
  }
  /** Hardware address length. */
  get hardwareLen(): number {
    return this.buffer[field.HLEN]!;
  }
  set hardwareLen(v: number) {
    this.buffer[field.HLEN] = v;
  }
  /** Protocol address length. */
  get protocolLen(): number {
    return this.buffer[field.PLEN]!;
  }
  set protocolLen(v: number) {
    this.buffer[field.PLEN] = v;
  }
  /** Operation. */
  get operation(): number {
    return this.#view.getUint16(field.OPER);
  }
  set operation(v: number) {
    this.#view.setUint16(field.OPER, v);
  }
  /** Sender hardware address. */
  get senderMac(): MacAddress {
    return this.buffer.slice(...field.SHA);
  }
  set senderMac(v: MacAddress) {
    this.buffer.set(v, field.SHA[0]);
  }
  /** Sender protocol address. */
  get senderIp(): number {
    return this.#view.getUint32(field.SPA);
  }
  set senderIp(v: number) {
    this.#view.setUint32(field.SPA, v);
  }
  /** Target hardware address. */
  get targetMac(): MacAddress {
    return this.buffer.slice(...field.THA);
  }
  set targetMac(v: MacAddress) {
    this.buffer.set(v, field.THA[0]);
  }
  /** Target protocol address. */
  get targetIp(): number {
    return this.#view.getUint32(field.TPA);
  }
  set targetIp(v: number) {
    this.#view.setUint32(field.TPA, v);
  }
}

/** A valid Ethernet/IPv4 ARP packet. */
export interface ArpRepr {
  /** ArpOperation.REQUEST or REPLY (others are rejected). */
  operation: number;
  /** Sender MAC. */
  senderMac: MacAddress;
  /** Sender IPv4 address. */
  senderIp: number;
  /** Target MAC (zero in requests). */
  targetMac: MacAddress;
  /** Target IPv4 address. */
  targetIp: number;
}

/** Parses, emits and sizes ARP packets. */
export const ArpRepr = {
  /** Validates the fixed fields and reads a checked packet. */
  parse(p: ArpPacket): ArpRepr {
    if (p.hardwareType !== HTYPE_ETHERNET || p.hardwareLen !== 6) {
      throw new WireError(
        "unsupported",
        "arp",
        "htype",
        `is ${p.hardwareType}/${p.hardwareLen}, not Ethernet`,
      );
    }
    if (p.protocolType !== EtherType.IPV4 || p.protocolLen !== 4) {
      throw new WireError(
        "unsupported",
        "arp",
        "ptype",
        `is 0x${p.protocolType.toString(16)}, not IPv4`,
      );
    }
    if (p.operation !== 1 && p.operation !== 2) {
      throw new WireError("malformed", "arp", "oper", `is ${p.operation}, not request or reply`);
    }
    return {
      operation: p.operation,
      senderMac: p.senderMac,
      senderIp: p.senderIp,
      targetMac: p.targetMac,
      targetIp: p.targetIp,
    };
  },
  /** Length of the packet. */
  bufferLen(): number {
    return ARP_LEN;
  },
  /** Writes the packet into a buffer of `ARP_LEN` bytes. */
  emit(r: ArpRepr, p: ArpPacket): void {
    p.hardwareType = HTYPE_ETHERNET;
    p.protocolType = EtherType.IPV4;
    p.hardwareLen = 6;
    p.protocolLen = 4;
    p.operation = r.operation;
    p.senderMac = r.senderMac;
    p.senderIp = r.senderIp;
    p.targetMac = r.targetMac;
    p.targetIp = r.targetIp;
  },
};
