/**
 * The Internet checksum (RFC 1071) and the IPv4 pseudo-header sum used by UDP and TCP.
 *
 * @module
 */

/** Whether parsers verify checksums. Fuzzers turn verification off to reach deeper code. */
export type ChecksumMode = "verify" | "ignore";

/**
 * One's-complement sum of `bytes` (not yet folded or inverted), added to `initial`.
 * An odd trailing byte is padded with zero, as RFC 1071 says.
 */
export function sum16(bytes: Uint8Array, initial = 0): number {
  const n = bytes.length;
  // DataView reads are big-endian words and fast in V8: 16 bytes per round (the hot path of
  // bulk TCP). The running sum stays far below 2^53 for any frame size.
  const view = new DataView(bytes.buffer, bytes.byteOffset, n);
  let sum = initial;
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const w0 = view.getUint32(i);
    const w1 = view.getUint32(i + 4);
    const w2 = view.getUint32(i + 8);
    const w3 = view.getUint32(i + 12);
    sum += (w0 >>> 16) + (w0 & 0xffff) + (w1 >>> 16) + (w1 & 0xffff) + (w2 >>> 16) +
      (w2 & 0xffff) + (w3 >>> 16) + (w3 & 0xffff);
  }
  for (; i + 2 <= n; i += 2) sum += view.getUint16(i);
  if (i < n) sum += bytes[i]! << 8;
  return sum;
}

/** Folds a running sum into 16 bits and inverts it: the value to put in a checksum field. */
export function finish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** Checksum of `bytes`. A buffer whose checksum field is correct yields 0. */
export function checksum(bytes: Uint8Array): number {
  return finish(sum16(bytes));
}

/** Sum of the IPv4 pseudo-header (RFC 793 section 3.1, RFC 768) for UDP and TCP. */
export function pseudoHeaderSum(
  ip: { source: number; destination: number },
  l4: { protocol: number; length: number },
): number {
  const { source: s, destination: d } = ip;
  return (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + l4.protocol + l4.length;
}

/** The IP addresses a UDP or TCP checksum covers, and whether to verify it. */
export interface IpContext {
  /** IPv4 source address. */
  source: number;
  /** IPv4 destination address. */
  destination: number;
  /** Verify (default) or ignore checksums when parsing. */
  checksum?: ChecksumMode;
}
