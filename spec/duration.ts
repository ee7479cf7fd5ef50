/**
 * Durations on the command line: `500ms`, `30s`, `10m`, `2h`, `1d`, or a bare number of seconds.
 *
 * @module
 */

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Longest duration accepted (about 24 days, the largest setTimeout delay). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * Parses a duration into milliseconds.
 *
 * @throws {RangeError} with a message naming the accepted forms.
 */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    throw new RangeError(
      `Invalid duration "${text}": expected a number with an optional unit ms, s, m, h or d ` +
        `(e.g. 30s, 10m)`,
    );
  }
  const ms = Math.round(Number(m[1]) * UNITS[m[2] ?? "s"]!);
  if (ms <= 0 || ms > MAX_DURATION_MS) {
    throw new RangeError(`Invalid duration "${text}": must be above 0 and at most 24 days`);
  }
  return ms;
}

/** Formats milliseconds as a short human duration (`3s`, `4m12s`, `2h05m`, `3d4h`). */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}
