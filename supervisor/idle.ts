/**
 * When to stop a sandbox on its own: after `idleMs` without any client connected, or `lifetimeMs`
 * after it started. Sans-I/O: the supervisor feeds it the session count and the time.
 *
 * @module
 */

/** Options of {@linkcode StopClock}. */
export interface StopClockOptions {
  /** Stop after this long with no client connected. */
  idleMs?: number;
  /** Stop this long after the start. */
  lifetimeMs?: number;
}

/** Decides when a sandbox should stop by itself. */
export class StopClock {
  readonly #idleMs: number | undefined;
  readonly #deadline: number | undefined;
  #lastBusy: number;

  /** Starts counting at `nowMs`. */
  constructor(nowMs: number, options: StopClockOptions) {
    this.#idleMs = options.idleMs;
    this.#deadline = options.lifetimeMs === undefined ? undefined : nowMs + options.lifetimeMs;
    this.#lastBusy = nowMs;
  }

  /** Milliseconds between checks (at most a second; sooner for short timeouts). */
  get checkEveryMs(): number {
    return Math.max(10, Math.min(1000, this.#idleMs ?? 1000, this.#deadline ?? 1000));
  }

  /** `true` when there is anything to watch. */
  get active(): boolean {
    return this.#idleMs !== undefined || this.#deadline !== undefined;
  }

  /** Records the clients connected at `nowMs`; returns why to stop, or undefined. */
  observe(sessions: number, nowMs: number): "idle timeout" | "lifetime timeout" | undefined {
    if (this.#deadline !== undefined && nowMs >= this.#deadline) return "lifetime timeout";
    if (sessions > 0) {
      this.#lastBusy = nowMs;
      return undefined;
    }
    if (this.#idleMs !== undefined && nowMs - this.#lastBusy >= this.#idleMs) {
      return "idle timeout";
    }
    return undefined;
  }
}
