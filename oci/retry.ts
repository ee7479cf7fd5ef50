/**
 * When to retry a registry request and how long to wait: exponential backoff with jitter for
 * network errors, 408, 429 and 5xx, honouring `Retry-After` (capped). No clock and no timers
 * here: the caller passes the attempt number and a random number and does the sleeping.
 *
 * @module
 */

/** The retry settings. */
export interface RetryPolicy {
  /** Attempts in all, the first included. @default 5 */
  attempts: number;
  /** Delay before the first retry in milliseconds; doubles each time. @default 250 */
  baseMs: number;
  /** Largest delay between attempts in milliseconds. @default 8000 */
  maxMs: number;
  /** Largest `Retry-After` honoured, in milliseconds (a longer one is capped). @default 15000 */
  maxRetryAfterMs: number;
}

/** The default policy: 5 attempts over about 4 s (0.25, 0.5, 1, 2 s plus jitter). */
export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  baseMs: 250,
  maxMs: 8000,
  maxRetryAfterMs: 15000,
};

/** What the last attempt ended with. */
export type AttemptOutcome =
  | { kind: "network" }
  | { kind: "status"; status: number; retryAfter?: string | null };

/** `true` for statuses worth another try: 408, 429 and 5xx except 501 and 505. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 ||
    (status >= 500 && status <= 599 && status !== 501 && status !== 505);
}

/**
 * Milliseconds to wait before attempt `attempt + 1`, or `null` to give up (the outcome is not
 * retryable, or `attempt` was the last). `attempt` counts from 1; `random` is in [0, 1).
 *
 * @example
 * ```ts
 * import { DEFAULT_RETRY, retryDelay } from "./retry.ts";
 * const d = retryDelay(DEFAULT_RETRY, 1, { kind: "status", status: 503 }, 0.5);
 * if (d !== 250) throw new Error(`got ${d}`);
 * ```
 */
export function retryDelay(
  policy: RetryPolicy,
  attempt: number,
  outcome: AttemptOutcome,
  random: number,
): number | null {
  if (attempt >= policy.attempts) return null;
  if (outcome.kind === "status" && !isRetryableStatus(outcome.status)) return null;
  const backoff = Math.min(policy.maxMs, policy.baseMs * 2 ** (attempt - 1));
  // ±20% jitter so clients that failed together do not retry together.
  let delay = Math.round(backoff * (0.8 + 0.4 * random));
  if (outcome.kind === "status" && outcome.retryAfter) {
    const after = parseRetryAfter(outcome.retryAfter);
    if (after !== null) delay = Math.max(delay, Math.min(after, policy.maxRetryAfterMs));
  }
  return delay;
}

/** Parses `Retry-After` as delay-seconds (HTTP dates are ignored: they need a clock). */
export function parseRetryAfter(value: string): number | null {
  return /^\s*\d{1,6}\s*$/.test(value) ? Number(value) * 1000 : null;
}
