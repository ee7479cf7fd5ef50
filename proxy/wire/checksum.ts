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
  let sum = initial;
  const n = bytes.length;
  const even = n & ~1;
  let i = 0;
  // Unrolled by 8 bytes: this loop is the hot path for bulk TCP.
  for (; i + 8 <= even; i += 8) {
    sum += ((bytes[i]! << 8) | bytes[i + 1]!) + ((bytes[i + 2]! << 8) | bytes[i + 3]!) +
      ((bytes[i + 4]! << 8) | bytes[i + 5]!) + ((bytes[i + 6]! << 8) | bytes[i + 7]!);
    // Fold occasionally so the sum stays an exact small integer.
    if (sum > 0x3fffffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  for (; i < even; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (n & 1) sum += bytes[n - 1]! << 8;
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
  src: number,
  dst: number,
  protocol: number,
  length: number,
): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
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
