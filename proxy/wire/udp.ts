/**
 * UDP datagrams (RFC 768) over IPv4.
 *
 * @module
 */

import { WireError } from "./error.ts";
import { finish, type IpContext, pseudoHeaderSum, sum16 } from "./checksum.ts";
import { IpProtocol } from "./constants.ts";

/** Field offsets (RFC 768). */
const field = {
  SOURCE_PORT: 0,
  DESTINATION_PORT: 2,
  LENGTH: 4,
  CHECKSUM: 6,
} as const;

/** Length of the UDP header. */
export const UDP_HEADER_LEN: number = field.CHECKSUM + 2;

/** View over a UDP datagram. */
export class UdpPacket {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps an output buffer without checks. */
  static newUnchecked(buffer: Uint8Array): UdpPacket {
    return new UdpPacket(buffer);
  }

  /** Wraps untrusted bytes, checking the header and the length field. */
  static newChecked(buffer: Uint8Array): UdpPacket {
    const p = new UdpPacket(buffer);
    p.checkLen();
    return p;
  }

  /** Throws unless the header fits and `length` lies between the header and the buffer size. */
  checkLen(): void {
    const len = this.buffer.length;
    if (len < UDP_HEADER_LEN) {
      throw new WireError(
        "truncated",
        "udp",
        "header",
        `needs ${UDP_HEADER_LEN} bytes, got ${len}`,
      );
    }
    const declared = this.length;
    if (declared < UDP_HEADER_LEN) {
      throw new WireError("malformed", "udp", "length", `is ${declared}, below the header length`);
    }
    if (declared > len) {
      throw new WireError("truncated", "udp", "length", `is ${declared}, buffer has ${len}`);
    }
  }

  /** Source port. */
  get sourcePort(): number {
    return this.#view.getUint16(field.SOURCE_PORT);
  }
  set sourcePort(v: number) {
    this.#view.setUint16(field.SOURCE_PORT, v);
  }
  /** Destination port. */
  get destinationPort(): number {
    return this.#view.getUint16(field.DESTINATION_PORT);
  }
  set destinationPort(v: number) {
    this.#view.setUint16(field.DESTINATION_PORT, v);
  }
  /** Length of header and payload. */
  get length(): number {
    return this.#view.getUint16(field.LENGTH);
  }
  set length(v: number) {
    this.#view.setUint16(field.LENGTH, v);
  }
  /** Checksum (0 means "not computed" in IPv4). */
  get checksum(): number {
    return this.#view.getUint16(field.CHECKSUM);
  }
  set checksum(v: number) {
    this.#view.setUint16(field.CHECKSUM, v);
  }
  /** Payload up to `length` (a view). */
  get payload(): Uint8Array {
    return this.buffer.subarray(UDP_HEADER_LEN, this.length);
  }
  /** True when the checksum is absent (0) or correct for these addresses. */
  verifyChecksum(source: number, destination: number): boolean {
    if (this.checksum === 0) return true;
    const bytes = this.buffer.subarray(0, this.length);
    const sum = sum16(
      bytes,
      pseudoHeaderSum({ source, destination }, { protocol: IpProtocol.UDP, length: bytes.length }),
    );
    return finish(sum) === 0;
  }
  /** Computes and stores the checksum (0 is sent as 0xffff, RFC 768). */
  fillChecksum(source: number, destination: number): void {
    this.checksum = 0;
    const bytes = this.buffer.subarray(0, this.length);
    const sum = finish(
      sum16(
        bytes,
        pseudoHeaderSum({ source, destination }, {
          protocol: IpProtocol.UDP,
          length: bytes.length,
        }),
      ),
    );
    this.checksum = sum === 0 ? 0xffff : sum;
  }
}

/** A valid UDP datagram. */
export interface UdpRepr {
  /** Source port. */
  sourcePort: number;
  /** Destination port. */
  destinationPort: number;
  /** Payload (a view into the received buffer when parsed). */
  payload: Uint8Array;
}

/** Parses, emits and sizes UDP datagrams. */
export const UdpRepr = {
  /** Verifies the checksum (unless ignored) against the IP addresses and reads the datagram. */
  parse(p: UdpPacket, ctx: IpContext): UdpRepr {
    const { source, destination } = ctx;
    const mode = ctx.checksum ?? "verify";
    if (p.destinationPort === 0) {
      throw new WireError("malformed", "udp", "destination_port", "is 0");
    }
    if (mode === "verify" && !p.verifyChecksum(source, destination)) {
      throw new WireError(
        "checksum",
        "udp",
        "checksum",
        `0x${p.checksum.toString(16)} does not match`,
      );
    }
    return { sourcePort: p.sourcePort, destinationPort: p.destinationPort, payload: p.payload };
  },
  /** Length of header and payload. */
  bufferLen(r: UdpRepr): number {
    return UDP_HEADER_LEN + r.payload.length;
  },
  /** Writes the datagram and checksum into a buffer of exactly `bufferLen(r)` bytes. */
  emit(r: UdpRepr, p: UdpPacket, ctx: IpContext): void {
    const { source, destination } = ctx;
    p.sourcePort = r.sourcePort;
    p.destinationPort = r.destinationPort;
    p.length = UDP_HEADER_LEN + r.payload.length;
    p.buffer.set(r.payload, UDP_HEADER_LEN);
    p.fillChecksum(source, destination);
  },
};
