/**
 * The one timer of a TCP connection, as plain data: no OS timer exists per connection. The
 * stack asks `pollAt()` for the earliest deadline and calls back then with the current time.
 *
 * @module
 */

/** What the timer is waiting for. */
export type TimerState =
  /** Nothing outstanding. */
  | { kind: "idle" }
  /** Unacknowledged data, SYN or FIN: retransmit at `expiresAt` (RFC 6298 section 5). */
  | { kind: "retransmit"; expiresAt: number }
  /** Zero window with data queued: probe at `expiresAt`, then back off to `delay` * 2. */
  | { kind: "zero-window-probe"; expiresAt: number; delay: number }
  /** TIME-WAIT: the connection is removed at `expiresAt`. */
  | { kind: "close"; expiresAt: number };

/** Longest gap between zero-window probes (Linux caps its persist timer at TCP_RTO_MAX too). */
export const ZERO_WINDOW_PROBE_MAX_DELAY = 60_000;

/** A connection's timer. */
export class TcpTimer {
  #state: TimerState = { kind: "idle" };

  /** Current state (read-only snapshot). */
  get state(): Readonly<TimerState> {
    return this.#state;
  }

  /** When the owner must be polled next, or undefined when idle. */
  pollAt(): number | undefined {
    return this.#state.kind === "idle" ? undefined : this.#state.expiresAt;
  }

  /** A retransmission is due. */
  shouldRetransmit(now: number): boolean {
    return this.#state.kind === "retransmit" && now >= this.#state.expiresAt;
  }

  /** A zero-window probe is due. */
  shouldProbeZeroWindow(now: number): boolean {
    return this.#state.kind === "zero-window-probe" && now >= this.#state.expiresAt;
  }

  /** TIME-WAIT is over. */
  shouldClose(now: number): boolean {
    return this.#state.kind === "close" && now >= this.#state.expiresAt;
  }

  /** The retransmission timer is running. */
  isRetransmitting(): boolean {
    return this.#state.kind === "retransmit";
  }

  /** The persist timer is running. */
  isProbing(): boolean {
    return this.#state.kind === "zero-window-probe";
  }

  /** Stops retransmission and probing (everything acknowledged). Leaves "close" alone. */
  setForIdle(): void {
    if (this.#state.kind !== "close") this.#state = { kind: "idle" };
  }

  /**
   * Starts the retransmission timer for `rto` ms. With `restart` false an already running timer
   * keeps its deadline (RFC 6298 5.1: start it only "if the timer is not running").
   */
  setForRetransmit(now: number, rto: number, restart = false): void {
    if (this.#state.kind === "close") return;
    if (this.#state.kind === "retransmit" && !restart) return;
    this.#state = { kind: "retransmit", expiresAt: now + rto };
  }

  /** Starts the persist timer with `delay` unless it already runs. */
  setForZeroWindowProbe(now: number, delay: number): void {
    if (this.#state.kind !== "idle") return;
    this.#state = { kind: "zero-window-probe", expiresAt: now + delay, delay };
  }

  /** After a probe: wait twice as long for the next one. */
  rearmZeroWindowProbe(now: number): void {
    if (this.#state.kind !== "zero-window-probe") return;
    const delay = Math.min(ZERO_WINDOW_PROBE_MAX_DELAY, this.#state.delay * 2);
    this.#state = { kind: "zero-window-probe", expiresAt: now + delay, delay };
  }

  /** Enters the TIME-WAIT countdown (restarted when the peer retransmits its FIN). */
  setForClose(now: number, delay: number): void {
    this.#state = { kind: "close", expiresAt: now + delay };
  }
}
