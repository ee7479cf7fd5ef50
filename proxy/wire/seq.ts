/**
 * TCP sequence numbers: unsigned 32-bit values compared and added modulo 2^32 (RFC 793 section
 * 3.3). Code never compares raw sequence numbers with `<`; it uses these helpers.
 *
 * @module
 */

/** `a + n` modulo 2^32. `n` may be negative but must stay within half the sequence space. */
export function seqAdd(a: number, n: number): number {
  if (n > 0x7fffffff || n < -0x80000000) {
    throw new RangeError(`Cannot add ${n} to sequence number ${a}: beyond half the space`);
  }
  return (a + n) >>> 0;
}

/**
 * `a - b` as a signed distance: positive when `a` is after `b`. Two numbers more than 2^31
 * apart are ambiguous; RFC 793 rules never compare such numbers.
 */
export function seqDiff(a: number, b: number): number {
  return ((a - b) | 0);
}

/** `a` is before `b`. */
export function seqLt(a: number, b: number): boolean {
  return seqDiff(a, b) < 0;
}

/** `a` is before or equal to `b`. */
export function seqLe(a: number, b: number): boolean {
  return seqDiff(a, b) <= 0;
}

/** `a` is after `b`. */
export function seqGt(a: number, b: number): boolean {
  return seqDiff(a, b) > 0;
}

/** `a` is after or equal to `b`. */
export function seqGe(a: number, b: number): boolean {
  return seqDiff(a, b) >= 0;
}

/** Larger of two sequence numbers in modulo order. */
export function seqMax(a: number, b: number): number {
  return seqGt(a, b) ? a : b;
}
