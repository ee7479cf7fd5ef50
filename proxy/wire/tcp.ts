/**
 * TCP segments (RFC 793) with the options this stack reads: MSS (RFC 793), window scale
 * (RFC 7323) and SACK-permitted (RFC 2018). SACK blocks and timestamps are skipped.
 *
 * @module
 */

import { WireError } from "./error.ts";
import { finish, type IpContext, pseudoHeaderSum, sum16 } from "./checksum.ts";
import { IpProtocol, TcpFlag, TcpOptionKind } from "./constants.ts";

/** Field offsets (RFC 793 section 3.1). */
const field = {
  SOURCE_PORT: 0,
  DESTINATION_PORT: 2,
  SEQUENCE: 4,
  ACKNOWLEDGMENT: 8,
  /** Data offset (high 4 bits) and flags (low 12 bits). */
  OFFSET_FLAGS: 12,
  WINDOW: 14,
  CHECKSUM: 16,
  URGENT: 18,
  OPTIONS: 20,
} as const;

/** Length of a header without options. */
export const TCP_HEADER_LEN: number = field.OPTIONS;
/** Longest header: data offset 15 words. */
export const TCP_MAX_HEADER_LEN = 60;
/** Largest window-scale shift (RFC 7323 section 2.3). */
export const TCP_MAX_WINDOW_SCALE = 14;

/** View over a TCP segment. */
export class TcpPacket {
  /** The bytes viewed. */
  readonly buffer: Uint8Array;
  readonly #view: DataView;

  private constructor(buffer: Uint8Array) {
    this.buffer = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /** Wraps an output buffer without checks. */
  static newUnchecked(buffer: Uint8Array): TcpPacket {
    return new TcpPacket(buffer);
  }

  /** Wraps untrusted bytes, checking the fixed header and the data offset. */
  static newChecked(buffer: Uint8Array): TcpPacket {
    const p = new TcpPacket(buffer);
    p.checkLen();
    return p;
  }

  /** Throws unless the fixed header fits and the data offset lies within the buffer. */
  checkLen(): void {
    const len = this.buffer.length;
    if (len < TCP_HEADER_LEN) {
      throw new WireError(
        "truncated",
        "tcp",
        "header",
        `needs ${TCP_HEADER_LEN} bytes, got ${len}`,
      );
    }
    const hl = this.headerLen;
    if (hl < TCP_HEADER_LEN) {
      throw new WireError(
        "malformed",
        "tcp",
        "data_offset",
        `is ${hl} bytes, below ${TCP_HEADER_LEN}`,
      );
    }
    if (hl > len) {
      throw new WireError("truncated", "tcp", "data_offset", `is ${hl} bytes, segment has ${len}`);
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
  /** Sequence number. */
  get sequence(): number {
    return this.#view.getUint32(field.SEQUENCE);
  }
  set sequence(v: number) {
    this.#view.setUint32(field.SEQUENCE, v);
  }
  /** Acknowledgment number. */
  get acknowledgment(): number {
    return this.#view.getUint32(field.ACKNOWLEDGMENT);
  }
  set acknowledgment(v: number) {
    this.#view.setUint32(field.ACKNOWLEDGMENT, v);
  }
  /** Header length in bytes (data offset * 4). */
  get headerLen(): number {
    return (this.buffer[field.OFFSET_FLAGS]! >> 4) * 4;
  }
  /** Flag bits (TcpFlag). */
  get flags(): number {
    return this.buffer[field.OFFSET_FLAGS + 1]!;
  }
  /** Sets data offset (in bytes) and flags together. */
  setHeaderLenAndFlags(headerLen: number, flags: number): void {
    this.buffer[field.OFFSET_FLAGS] = (headerLen / 4) << 4;
    this.buffer[field.OFFSET_FLAGS + 1] = flags;
  }
  /** Window field (unscaled). */
  get window(): number {
    return this.#view.getUint16(field.WINDOW);
  }
  set window(v: number) {
    this.#view.setUint16(field.WINDOW, v);
  }
  /** Checksum. */
  get checksum(): number {
    return this.#view.getUint16(field.CHECKSUM);
  }
  set checksum(v: number) {
    this.#view.setUint16(field.CHECKSUM, v);
  }
  /** Urgent pointer. */
  get urgent(): number {
    return this.#view.getUint16(field.URGENT);
  }
  set urgent(v: number) {
    this.#view.setUint16(field.URGENT, v);
  }
  /** Option bytes (a view). */
  get options(): Uint8Array {
    return this.buffer.subarray(field.OPTIONS, this.headerLen);
  }
  /** Payload (a view). */
  get payload(): Uint8Array {
    return this.buffer.subarray(this.headerLen);
  }
  /** True when the checksum is correct for these IP addresses. */
  verifyChecksum(source: number, destination: number): boolean {
    const len = this.buffer.length;
    return finish(
      sum16(
        this.buffer,
        pseudoHeaderSum({ source, destination }, { protocol: IpProtocol.TCP, length: len }),
      ),
    ) ===
      0;
  }
  /** Computes and stores the checksum over the whole buffer. */
  fillChecksum(source: number, destination: number): void {
    this.checksum = 0;
    const len = this.buffer.length;
    this.checksum = finish(
      sum16(
        this.buffer,
        pseudoHeaderSum({ source, destination }, { protocol: IpProtocol.TCP, length: len }),
      ),
    );
  }
}

/** The options this stack reads from a segment. */
export interface TcpOptions {
  /** Maximum segment size (RFC 793). */
  maxSegmentSize?: number;
  /** Window scale shift (RFC 7323), capped at 14. */
  windowScale?: number;
  /** SACK-permitted (RFC 2018); noted, not used. */
  sackPermitted?: boolean;
}

/** Parses an option list. Throws WireError naming "options" on a malformed list. */
export function parseTcpOptions(bytes: Uint8Array): TcpOptions {
  const out: TcpOptions = {};
  let i = 0;
  while (i < bytes.length) {
    const kind = bytes[i]!;
    if (kind === TcpOptionKind.END) break;
    if (kind === TcpOptionKind.NOP) {
      i++;
      continue;
    }
    if (i + 1 >= bytes.length) {
      throw new WireError(
        "malformed",
        "tcp",
        "options",
        `option ${kind} at ${i} has no length byte`,
      );
    }
    const len = bytes[i + 1]!;
    if (len < 2 || i + len > bytes.length) {
      throw new WireError(
        "malformed",
        "tcp",
        "options",
        `option ${kind} at ${i} has length ${len}`,
      );
    }
    const expectLen = (want: number) => {
      if (len !== want) {
        throw new WireError(
          "malformed",
          "tcp",
          "options",
          `option ${kind} has length ${len}, not ${want}`,
        );
      }
    };
    switch (kind) {
      case TcpOptionKind.MSS:
        expectLen(4);
        out.maxSegmentSize = (bytes[i + 2]! << 8) | bytes[i + 3]!;
        break;
      case TcpOptionKind.WINDOW_SCALE:
        expectLen(3);
        // RFC 7323 section 2.3: a shift above 14 is treated as 14.
        out.windowScale = Math.min(bytes[i + 2]!, TCP_MAX_WINDOW_SCALE);
        break;
      case TcpOptionKind.SACK_PERMITTED:
        expectLen(2);
        out.sackPermitted = true;
        break;
      default:
        // SACK blocks, timestamps and unknown options: skipped (we never offer them).
        break;
    }
    i += len;
  }
  return out;
}

const NO_OPTIONS = new Uint8Array(0);

/** Encodes MSS and window scale (the options of our SYN-ACK), padded to 4 bytes. */
export function encodeTcpOptions(o: TcpOptions): Uint8Array {
  if (o.maxSegmentSize === undefined && o.windowScale === undefined && !o.sackPermitted) {
    return NO_OPTIONS; // every segment after the handshake
  }
  const bytes: number[] = [];
  if (o.maxSegmentSize !== undefined) {
    bytes.push(TcpOptionKind.MSS, 4, o.maxSegmentSize >> 8, o.maxSegmentSize & 0xff);
  }
  if (o.windowScale !== undefined) {
    bytes.push(TcpOptionKind.NOP, TcpOptionKind.WINDOW_SCALE, 3, o.windowScale);
  }
  if (o.sackPermitted) {
    bytes.push(TcpOptionKind.NOP, TcpOptionKind.NOP, TcpOptionKind.SACK_PERMITTED, 2);
  }
  return new Uint8Array(bytes);
}

/** A valid TCP segment. */
export interface TcpRepr {
  /** Source port. */
  sourcePort: number;
  /** Destination port. */
  destinationPort: number;
  /** Sequence number. */
  sequence: number;
  /** Acknowledgment number (meaningful when flags has ACK). */
  acknowledgment: number;
  /** Flag bits (TcpFlag). */
  flags: number;
  /** Raw 16-bit window field (not scaled). */
  window: number;
  /** Options read from the header. */
  options: TcpOptions;
  /** Payload (a view into the received buffer when parsed). */
  payload: Uint8Array;
}

/** Parses, emits and sizes TCP segments. */
export const TcpRepr = {
  /** Verifies checksum (unless ignored) and flag sanity, parses options, reads the segment. */
  parse(p: TcpPacket, ctx: IpContext): TcpRepr {
    const { source, destination } = ctx;
    const mode = ctx.checksum ?? "verify";
    if (p.sourcePort === 0) throw new WireError("malformed", "tcp", "source_port", "is 0");
    if (p.destinationPort === 0) {
      throw new WireError("malformed", "tcp", "destination_port", "is 0");
    }
    const flags = p.flags;
    if ((flags & TcpFlag.SYN) && (flags & TcpFlag.FIN)) {
      throw new WireError("malformed", "tcp", "flags", "has both SYN and FIN");
    }
    if ((flags & TcpFlag.SYN) && (flags & TcpFlag.RST)) {
      throw new WireError("malformed", "tcp", "flags", "has both SYN and RST");
    }
    if (mode === "verify" && !p.verifyChecksum(source, destination)) {
      throw new WireError(
        "checksum",
        "tcp",
        "checksum",
        `0x${p.checksum.toString(16)} does not match`,
      );
    }
    return {
      sourcePort: p.sourcePort,
      destinationPort: p.destinationPort,
      sequence: p.sequence,
      acknowledgment: p.acknowledgment,
      flags,
      window: p.window,
      options: parseTcpOptions(p.options),
      payload: p.payload,
    };
  },
  /** Header length including options. */
  headerLen(r: TcpRepr): number {
    return TCP_HEADER_LEN + encodeTcpOptions(r.options).length;
  },
  /** Length of header, options and payload. */
  bufferLen(r: TcpRepr): number {
    return TcpRepr.headerLen(r) + r.payload.length;
  },
  /**
   * Writes the segment and its checksum into a buffer of exactly `bufferLen(r)` bytes. When
   * `payloadInPlace` is true the payload is already in the buffer (saves a copy on bulk sends).
   */
  emit(r: TcpRepr, p: TcpPacket, addrs: IpContext & { payloadInPlace?: boolean }): void {
    const opts = encodeTcpOptions(r.options);
    const hl = TCP_HEADER_LEN + opts.length;
    p.sourcePort = r.sourcePort;
    p.destinationPort = r.destinationPort;
    p.sequence = r.sequence;
    p.acknowledgment = r.acknowledgment;
    p.setHeaderLenAndFlags(hl, r.flags);
    p.window = r.window;
    p.urgent = 0;
    p.buffer.set(opts, TCP_HEADER_LEN);
    if (!addrs.payloadInPlace) p.buffer.set(r.payload, hl);
    p.fillChecksum(addrs.source, addrs.destination);
  },
};

/** Length a segment occupies in sequence space: payload plus one each for SYN and FIN. */
export function segmentLen(r: TcpRepr): number {
  return r.payload.length + ((r.flags & TcpFlag.SYN) ? 1 : 0) + ((r.flags & TcpFlag.FIN) ? 1 : 0);
}
