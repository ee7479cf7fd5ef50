/**
 * Retransmission timeout estimator (RFC 6298), times in milliseconds.
 *
 * @module
 */

import { seqGe } from "../wire/seq.ts";

/** RFC 6298 section 2.1: before any RTT sample, RTO is 1 second. */
export const RTTE_INITIAL_RTO = 1000;
/**
 * RFC 6298 section 2.4 says RTO SHOULD be at least 1 second; Linux uses 200 ms (TCP_RTO_MIN),
 * and on a local virtio link a 1 s floor would stall a lost segment for a second. Linux does
 * this, so we do too.
 */
export const RTTE_MIN_RTO = 200;
/** RFC 6298 section 2.5: a maximum of at least 60 seconds MAY be placed on RTO. */
export const RTTE_MAX_RTO = 60_000;
/** RFC 6298 section 2: K = 4. */
export const RTTE_K = 4;
/** RFC 6298 section 2.3: alpha = 1/8. */
export const RTTE_ALPHA = 1 / 8;
/** RFC 6298 section 2.3: beta = 1/4. */
export const RTTE_BETA = 1 / 4;
/** Clock granularity G (RFC 6298 section 2): our clock is `performance.now()`, 1 ms is safe. */
export const RTTE_GRANULARITY = 1;

/** RFC 6298 estimator with Karn's rule (one timed segment at a time, never a retransmitted one). */
export class RttEstimator {
  #srtt: number | undefined;
  #rttvar = 0;
  #rto = RTTE_INITIAL_RTO;
  /** The segment being timed: the sequence number its ACK must reach, and when it was sent. */
  #timing: { ackSeq: number; sentAt: number } | undefined;

  /** Current retransmission timeout in ms. */
  get rto(): number {
    return this.#rto;
  }

  /** Smoothed RTT, or undefined before the first sample. */
  get srtt(): number | undefined {
    return this.#srtt;
  }

  /** Feeds one RTT measurement (RFC 6298 sections 2.2 and 2.3). */
  sample(rtt: number): void {
    if (this.#srtt === undefined) {
      // 2.2: first measurement R: SRTT <- R, RTTVAR <- R/2.
      this.#srtt = rtt;
      this.#rttvar = rtt / 2;
    } else {
      // 2.3: RTTVAR first (it uses the old SRTT), then SRTT.
      this.#rttvar = (1 - RTTE_BETA) * this.#rttvar + RTTE_BETA * Math.abs(this.#srtt - rtt);
      this.#srtt = (1 - RTTE_ALPHA) * this.#srtt + RTTE_ALPHA * rtt;
    }
    // 2.2/2.3: RTO <- SRTT + max(G, K*RTTVAR), then 2.4/2.5 bounds.
    const rto = this.#srtt + Math.max(RTTE_GRANULARITY, RTTE_K * this.#rttvar);
    this.#rto = Math.min(RTTE_MAX_RTO, Math.max(RTTE_MIN_RTO, rto));
  }

  /** A segment ending at `endSeq` was sent at `now`; time it unless one is already timed. */
  onSend(now: number, endSeq: number): void {
    if (this.#timing === undefined) this.#timing = { ackSeq: endSeq, sentAt: now };
  }

  /** An ACK up to `ack` arrived: if it covers the timed segment, take a sample. */
  onAck(now: number, ack: number): void {
    if (this.#timing !== undefined && seqGe(ack, this.#timing.ackSeq)) {
      this.sample(now - this.#timing.sentAt);
      this.#timing = undefined;
    }
  }

  /** Karn's algorithm (RFC 6298 section 3): never sample a retransmitted segment. */
  onRetransmit(): void {
    this.#timing = undefined;
  }

  /** RFC 6298 section 5.5: on expiry, back off RTO <- RTO * 2 (bounded by the maximum). */
  onRto(): void {
    this.#rto = Math.min(RTTE_MAX_RTO, this.#rto * 2);
  }
}
