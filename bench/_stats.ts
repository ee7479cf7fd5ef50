/**
 * Order statistics the benchmarks print (one definition, so every bench's "median" means the
 * same thing).
 *
 * @module
 */

/** The element at quantile `q` (0–1) of `xs` after sorting (upper for even counts); NaN if empty. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * q))]! : NaN;
}

/** {@linkcode quantile} 0.5: the middle element (the upper of two); NaN if empty. */
export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}
