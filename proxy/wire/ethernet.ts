/**
 * Ethernet II frames (IEEE 802.3, no VLAN tags).
 *
 * @module
 */

import { WireError } from "./error.ts";
import type { MacAddress } from "./address.ts";

/** Field offsets (IEEE 802.3 Ethernet II header). */
const field = {
  DESTINATION: [0, 6],
  SOURCE: [6, 12],
  ETHERTYPE: [12, 14],
} as const;

/** Length of an Ethernet II header. */
export const ETHERNET_HEADER_LEN: number = field.ETHERTYPE[1];

/** View over an Ethernet frame. */
export class EthernetFrame {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps a buffer without checks. Only for output buffers of `EthernetRepr.bufferLen`. */
  static newUnchecked(buffer: Uint8Array): EthernetFrame {
    return new EthernetFrame(buffer);
  }

  /** Wraps untrusted bytes; after this no getter can read out of bounds. */
  static newChecked(buffer: Uint8Array): EthernetFrame {
    const frame = new EthernetFrame(buffer);
    frame.checkLen();
    return frame;
  }

  /** Throws WireError("truncated") when the buffer cannot hold a header. */
  checkLen(): void {
    if (this.buffer.length < ETHERNET_HEADER_LEN) {
      throw new WireError(
        "truncated",
        "ethernet",
        "ethertype",
        `needs ${ETHERNET_HEADER_LEN} bytes, frame has ${this.buffer.length}`,
      );
    }
  }

  /** Destination MAC (a copy). */
  get destination(): MacAddress {
    return this.buffer.slice(...field.DESTINATION);
  }
  set destination(mac: MacAddress) {
    this.buffer.set(mac, field.DESTINATION[0]);
  }
  /** Source MAC (a copy). */
  get source(): MacAddress {
    return this.buffer.slice(...field.SOURCE);
  }
  set source(mac: MacAddress) {
    this.buffer.set(mac, field.SOURCE[0]);
  }
  /** EtherType. */
  get etherType(): number {
    return this.#view.getUint16(field.ETHERTYPE[0]);
  }
  set etherType(value: number) {
    this.#view.setUint16(field.ETHERTYPE[0], value);
  }
  /** Bytes after the header (a view, not a copy). */
  get payload(): Uint8Array {
    return this.buffer.subarray(ETHERNET_HEADER_LEN);
  }
}

/** Parsed Ethernet header. */
export interface EthernetRepr {
  /** Source MAC. */
  source: MacAddress;
  /** Destination MAC. */
  destination: MacAddress;
  /** EtherType of the payload. */
  etherType: number;
}

/** Parses, emits and sizes Ethernet headers. */
export const EthernetRepr = {
  /** Reads the header of a checked frame. */
  parse(frame: EthernetFrame): EthernetRepr {
    return { source: frame.source, destination: frame.destination, etherType: frame.etherType };
  },
  /** Length of the header. */
  bufferLen(): number {
    return ETHERNET_HEADER_LEN;
  },
  /** Writes the header into a frame at least `bufferLen()` long. */
  emit(repr: EthernetRepr, frame: EthernetFrame): void {
    frame.destination = repr.destination;
    frame.source = repr.source;
    frame.etherType = repr.etherType;
  },
};
