/**
 * One TCP connection opened by the guest (passive open only), sans-I/O: the caller passes
 * parsed segments and the current time in (`process`), pulls segments out (`dispatch`) and asks
 * when to come back (`pollAt`). The host side reads and writes bytes with `recv`/`send`.
 *
 * Flow control is end to end: the window we advertise is the free space of the receive buffer,
 * so a host socket that drains slowly shrinks it; and `sendCapacity` is the free space of the
 * send buffer, which empties only as fast as the guest acknowledges, so the host socket is read
 * no faster than the guest's window allows.
 *
 * @module
 */

import { TcpFlag } from "../wire/constants.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "../wire/seq.ts";
import type { TcpRepr } from "../wire/tcp.ts";
import { RingBuffer } from "./buffer.ts";
import { RttEstimator } from "./rtt.ts";
import { canReceive, canSend, isSynchronized, type TcpState } from "./state.ts";
import { TcpTimer } from "./timer.ts";

/** An IPv4 address and port. */
export interface Endpoint {
  /** IPv4 address as a number. */
  address: number;
  /** Port. */
  port: number;
}

/** Settings of one connection. */
export interface TcpSocketOptions {
  /** Where the guest connected to (our side of the connection). */
  local: Endpoint;
  /** The guest's address and port. */
  remote: Endpoint;
  /** Our initial sequence number (random in production, fixed in tests). */
  iss: number;
  /** Largest payload we put in one segment (MTU - 40); the guest's MSS option may lower it. */
  mss: number;
  /** Receive buffer capacity (guest to host), bytes. */
  rxCapacity: number;
  /** Send buffer capacity (host to guest), bytes. */
  txCapacity: number;
  /** TIME-WAIT duration in ms. */
  timeWaitMs?: number;
  /** Retransmissions of one segment before the connection is reset. */
  maxRetransmits?: number;
}

/** Default TIME-WAIT: short, because our ISS is random and the guest's ports are its own. */
export const DEFAULT_TIME_WAIT_MS = 2_000;
/** Default retransmissions before giving up (with backoff from 200 ms: about 1.7 minutes). */
export const DEFAULT_MAX_RETRANSMITS = 10;
/** RFC 1122 4.2.2.6: MSS to assume when the SYN carries none. */
export const DEFAULT_GUEST_MSS = 536;
/** Fast retransmit after this many duplicate ACKs (RFC 5681 section 3.2). */
export const DUP_ACK_THRESHOLD = 3;

/** Why a connection reached CLOSED. */
export type CloseReason =
  | "closed"
  | "reset-by-guest"
  | "timed-out"
  | "aborted"
  | "refused";

/** Guest misbehaviour or noise seen in one segment, for counters (never thrown). */
export const SegmentStatus = {
  OK: 0,
  /** ACK for data we never sent. */
  INVALID_ACK: 1 << 0,
  /** Data beyond our advertised window (trimmed). */
  BEYOND_WINDOW: 1 << 1,
  /** Data after the guest's FIN. */
  DATA_AFTER_FIN: 1 << 2,
  /** Segment starts after RCV.NXT (we keep no out-of-order queue). */
  OUT_OF_ORDER: 1 << 3,
  /** Entirely old segment (retransmission of data we have). */
  DUPLICATE: 1 << 4,
  /** RST not exactly at RCV.NXT (RFC 5961 challenge ACK sent). */
  BAD_RST: 1 << 5,
  /** SYN in a synchronized state (RFC 5961 challenge ACK sent). */
  UNEXPECTED_SYN: 1 << 6,
  /** Segment without ACK after the handshake (dropped, RFC 793). */
  NO_ACK: 1 << 7,
} as const;

/** What changed for the host side since the last `takeEvents()`. */
export const SocketEvent = {
  /** Bytes (or the guest's EOF) are ready for `recv`. */
  READABLE: 1,
  /** `sendCapacity` grew. */
  WRITABLE: 2,
} as const;

/** A guest-initiated TCP connection. */
export class TcpSocket {
  /** Where the guest connected to. */
  readonly local: Endpoint;
  /** The guest's end. */
  readonly remote: Endpoint;
  #state: TcpState = "SYN-RECEIVED";
  #closeReason: CloseReason | undefined;

  readonly #timer = new TcpTimer();
  readonly #rtte = new RttEstimator();
  readonly #rx: RingBuffer;
  readonly #tx: RingBuffer;
  readonly #timeWaitMs: number;
  readonly #maxRetransmits: number;

  // Receive side (RFC 793 names).
  readonly #irs: number;
  #rcvNxt: number;
  /** Right edge of the window we last advertised (RCV.NXT + window at that time). */
  #rcvAdvEdge: number;
  /** Our window-scale shift, 0 unless the guest offered scaling. */
  readonly #rcvShift: number;

  // Send side.
  readonly #iss: number;
  #sndUna: number;
  #sndNxt: number;
  /** Highest sequence number sent so far (SND.NXT moves back below it on go-back-N). */
  #sndMax: number;
  #sndWnd: number;
  /**
   * Congestion window (bytes). Unlimited until the first loss: the link is local and the
   * guest's window bounds what is in flight. After a timeout it restarts at one segment and
   * grows as RFC 5681 says (slow start to ssthresh, then one MSS per window), so a slow guest
   * is not flooded with a whole window of retransmissions.
   */
  #cwnd = Infinity;
  #ssthresh = Infinity;
  /** Fast retransmit due: resend the segment at SND.UNA once. */
  #retransmitOne = false;
  #sndWl1 = 0;
  #sndWl2 = 0;
  /** The guest's window-scale shift. */
  readonly #sndShift: number;
  readonly #mss: number;
  readonly #offerScale: number | undefined;
  /** Data bytes at the head of `#tx` already sent once (SND.NXT - SND.UNA minus SYN/FIN). */
  #txSent = 0;

  #accepted = false;
  #synAckPending = false;
  #synAckSent = false;
  #finQueued = false;
  #finSent = false;
  #finSeq = 0;
  /** A FIN was sent at least once (so `#finSeq` is meaningful even after go-back-N). */
  #finSeqValid = false;
  #finAcked = false;
  #peerFin = false;
  #ackPending = false;
  #rstPending = false;
  #dupAcks = 0;
  #retransmits = 0;
  #events = 0;

  private constructor(syn: TcpRepr, opts: TcpSocketOptions) {
    this.local = opts.local;
    this.remote = opts.remote;
    this.#timeWaitMs = opts.timeWaitMs ?? DEFAULT_TIME_WAIT_MS;
    this.#maxRetransmits = opts.maxRetransmits ?? DEFAULT_MAX_RETRANSMITS;
    this.#rx = new RingBuffer(opts.rxCapacity);
    this.#tx = new RingBuffer(opts.txCapacity);
    this.#irs = syn.sequence;
    this.#rcvNxt = seqAdd(syn.sequence, 1);
    this.#rcvAdvEdge = this.#rcvNxt;
    // RFC 7323 2.2: scaling applies only when both SYNs carry the option.
    if (syn.options.windowScale !== undefined) {
      this.#sndShift = syn.options.windowScale;
      let shift = 0;
      while (shift < 14 && (0xffff << shift) < opts.rxCapacity) shift++;
      this.#rcvShift = shift;
      this.#offerScale = shift;
    } else {
      this.#sndShift = 0;
      this.#rcvShift = 0;
      this.#offerScale = undefined;
    }
    this.#iss = opts.iss >>> 0;
    this.#sndUna = this.#iss;
    this.#sndNxt = this.#iss;
    this.#sndMax = this.#iss;
    // The SYN's window is never scaled (RFC 7323 2.2).
    this.#sndWnd = syn.window;
    this.#mss = Math.max(
      64,
      Math.min(opts.mss, syn.options.maxSegmentSize ?? DEFAULT_GUEST_MSS),
    );
  }

  /** A connection for a guest SYN, in SYN-RECEIVED, waiting for `accept()` or `refuse()`. */
  static fromSyn(syn: TcpRepr, opts: TcpSocketOptions): TcpSocket {
    if (!(syn.flags & TcpFlag.SYN) || (syn.flags & (TcpFlag.ACK | TcpFlag.RST))) {
      throw new TypeError("Cannot open connection: segment is not a plain SYN");
    }
    return new TcpSocket(syn, opts);
  }

  /** RFC 793 state. */
  get state(): TcpState {
    return this.#state;
  }
  /** Why the connection closed (set once CLOSED). */
  get closeReason(): CloseReason | undefined {
    return this.#closeReason;
  }
  /** The guest's initial sequence number. */
  get irs(): number {
    return this.#irs;
  }
  /** Effective MSS (ours bounded by the guest's). */
  get mss(): number {
    return this.#mss;
  }
  /** Current retransmission timeout (ms). */
  get rto(): number {
    return this.#rtte.rto;
  }
  /** The guest's send window in bytes (scaled). */
  get sendWindow(): number {
    return this.#sndWnd;
  }
  /** Bytes the host side can still hand to `send`. */
  get sendCapacity(): number {
    return canSend(this.#state) || this.#state === "SYN-RECEIVED"
      ? (this.#finQueued ? 0 : this.#tx.free)
      : 0;
  }
  /** Bytes waiting in the send buffer (unsent and unacknowledged). */
  get sendQueued(): number {
    return this.#tx.length;
  }
  /** Bytes from the guest ready for `recv`. */
  get recvAvailable(): number {
    return this.#rx.length;
  }
  /** The guest sent FIN and every byte before it has been read: end of stream. */
  get recvFinished(): boolean {
    return this.#peerFin && this.#rx.length === 0;
  }
  /** Bytes of backing store held by the two buffers. */
  get allocatedBytes(): number {
    return this.#rx.allocated + this.#tx.allocated;
  }
  /** The window we would advertise now, in bytes. */
  get receiveWindow(): number {
    return this.#windowField() << this.#rcvShift;
  }
  /** The host side accepted the connection. */
  get accepted(): boolean {
    return this.#accepted;
  }

  /** Returns and clears the SocketEvent bits raised since the last call. */
  takeEvents(): number {
    const e = this.#events;
    this.#events = 0;
    return e;
  }

  /** The host side accepted: answer with SYN-ACK at the next dispatch. */
  accept(): void {
    if (this.#state !== "SYN-RECEIVED" || this.#accepted) return;
    this.#accepted = true;
    this.#synAckPending = true;
  }

  /** The host side (policy or dial) refused: answer with RST at the next dispatch. */
  refuse(): void {
    if (this.#state !== "SYN-RECEIVED") return;
    this.#rstPending = true;
    this.#closeReason = "refused";
  }

  /** The host side failed: reset the connection at the next dispatch. */
  abort(): void {
    if (this.#state === "CLOSED") return;
    this.#rstPending = true;
    this.#closeReason ??= "aborted";
  }

  /** Queues bytes for the guest; returns how many fit (0 when full or after `close`). */
  send(data: Uint8Array): number {
    if (this.sendCapacity === 0) return 0;
    return this.#tx.write(data);
  }

  /** Removes up to `max` bytes the guest sent. May schedule a window update. */
  recv(max: number): Uint8Array {
    const before = this.#guestVisibleWindow();
    const out = this.#rx.read(max);
    if (out.length > 0 && isSynchronized(this.#state) && canReceive(this.#state)) {
      // RFC 1122 4.2.3.3 (receiver SWS avoidance): announce a larger window only when it grew
      // by min(half the buffer, one MSS).
      const grown = this.receiveWindow - before;
      if (grown >= Math.min(this.#rx.capacity / 2, this.#mss)) this.#ackPending = true;
    }
    return out;
  }

  /** The host side finished sending: FIN after the queued bytes. */
  close(): void {
    this.#finQueued = true;
  }

  /** Processes one segment from the guest for this connection. Returns SegmentStatus bits. */
  process(now: number, seg: TcpRepr): number {
    const flags = seg.flags;
    switch (this.#state) {
      // A closed connection answers nothing; the stack removes it and treats later segments
      // as addressed to no connection.
      case "CLOSED":
      case "LISTEN":
      case "SYN-SENT":
        return SegmentStatus.OK;
      case "SYN-RECEIVED":
        return this.#processSynReceived(now, seg);
      default:
        break;
    }
    // Synchronized states, RFC 793 "SEGMENT ARRIVES" steps in order.
    if (flags & TcpFlag.RST) {
      // RFC 5961 3.2: reset only when SEQ is exactly RCV.NXT; otherwise a challenge ACK.
      if (seg.sequence === this.#rcvNxt) {
        this.#enterClosed("reset-by-guest");
        return SegmentStatus.OK;
      }
      this.#ackPending = true;
      return SegmentStatus.BAD_RST;
    }
    if (flags & TcpFlag.SYN) {
      // RFC 5961 4.2: any SYN in a synchronized state gets a challenge ACK.
      this.#ackPending = true;
      return SegmentStatus.UNEXPECTED_SYN;
    }
    if (!(flags & TcpFlag.ACK)) return SegmentStatus.NO_ACK; // RFC 793: drop without ACK.
    return this.#processSynchronized(now, seg);
  }

  #processSynReceived(now: number, seg: TcpRepr): number {
    const flags = seg.flags;
    if (flags & TcpFlag.RST) {
      // RFC 793: in SYN-RECEIVED an in-window RST closes the (passively opened) connection.
      const offset = seqDiff(seg.sequence, this.#rcvNxt);
      if (offset >= 0 && offset <= this.receiveWindow) {
        this.#enterClosed("reset-by-guest");
        return SegmentStatus.OK;
      }
      return SegmentStatus.BAD_RST;
    }
    if (flags & TcpFlag.SYN) {
      // The guest retransmitted its SYN: repeat our SYN-ACK if we already answered.
      if (seg.sequence === this.#irs && this.#synAckSent) this.#synAckPending = true;
      return seg.sequence === this.#irs ? SegmentStatus.OK : SegmentStatus.UNEXPECTED_SYN;
    }
    if (!(flags & TcpFlag.ACK)) return SegmentStatus.NO_ACK;
    if (!this.#synAckSent || seg.acknowledgment !== seqAdd(this.#iss, 1)) {
      // An ACK of nothing we sent. RFC 793 would answer RST; the guest cannot have seen our
      // SYN-ACK, so this is noise: count it and drop.
      return SegmentStatus.INVALID_ACK;
    }
    // RFC 793: SND.UNA <- SEG.ACK, enter ESTABLISHED, then continue processing the segment.
    this.#state = "ESTABLISHED";
    this.#sndUna = seg.acknowledgment;
    this.#sndWnd = seg.window << this.#sndShift;
    this.#sndWl1 = seg.sequence;
    this.#sndWl2 = seg.acknowledgment;
    this.#rtte.onAck(now, seg.acknowledgment);
    this.#retransmits = 0;
    this.#timer.setForIdle();
    this.#events |= SocketEvent.WRITABLE;
    return this.#processSynchronized(now, seg);
  }

  #processSynchronized(now: number, seg: TcpRepr): number {
    let status: number = SegmentStatus.OK;
    let payload = seg.payload;
    let fin = (seg.flags & TcpFlag.FIN) !== 0;
    let seq = seg.sequence;

    // Sequence check (RFC 793 p. 69, simplified to in-order delivery).
    const early = seqDiff(this.#rcvNxt, seq);
    let acceptData = true;
    if (early > 0) {
      if (early >= payload.length + (fin ? 1 : 0)) {
        // Entirely old: a retransmission, or a window probe at RCV.NXT-1. Answer with an ACK
        // (which also carries our current window) and still use its ACK field.
        this.#ackPending = true;
        status |= SegmentStatus.DUPLICATE;
        acceptData = false;
        if (this.#state === "TIME-WAIT" && fin) this.#timer.setForClose(now, this.#timeWaitMs);
      } else {
        payload = payload.subarray(early);
        seq = this.#rcvNxt;
      }
    } else if (early < 0) {
      // Starts beyond RCV.NXT: no reassembly queue, so drop the data and repeat our ACK; the
      // guest retransmits from RCV.NXT (a virtio link does not reorder, so this follows loss).
      this.#ackPending = true;
      status |= SegmentStatus.OUT_OF_ORDER;
      acceptData = false;
    }

    // ACK field.
    const ack = seg.acknowledgment;
    if (seqGt(ack, this.#sndMax)) {
      // RFC 793: an ACK for something not yet sent gets an ACK back, segment dropped. (After
      // go-back-N, an ACK beyond SND.NXT but within what was sent is fine: the guest had it.)
      this.#ackPending = true;
      return status | SegmentStatus.INVALID_ACK;
    }
    const windowBefore = this.#sndWnd;
    const acked = seqDiff(ack, this.#sndUna);
    if (acked > 0) {
      let dataAcked = acked;
      if (this.#finSeqValid && ack === seqAdd(this.#finSeq, 1)) {
        this.#finAcked = true;
        this.#finSent = true;
        dataAcked -= 1;
      }
      this.#tx.consume(dataAcked);
      this.#txSent = Math.max(0, this.#txSent - dataAcked);
      this.#sndUna = ack;
      if (seqLt(this.#sndNxt, ack)) this.#sndNxt = ack;
      this.#rtte.onAck(now, ack);
      this.#retransmits = 0;
      this.#dupAcks = 0;
      if (this.#cwnd !== Infinity) {
        // RFC 5681 3.1: slow start below ssthresh, then about one MSS per window.
        this.#cwnd += this.#cwnd < this.#ssthresh
          ? Math.min(dataAcked, this.#mss)
          : Math.max(1, Math.floor(this.#mss * this.#mss / this.#cwnd));
      }
      // RFC 6298 5.2 and 5.3: all acknowledged: stop; otherwise restart the timer.
      if (this.#sndUna === this.#sndMax) this.#timer.setForIdle();
      else this.#timer.setForRetransmit(now, this.#rtte.rto, true);
      if (dataAcked > 0) this.#events |= SocketEvent.WRITABLE;
    }
    // RFC 793: update the send window only from a newer segment (SND.WL1/SND.WL2).
    if (
      acked >= 0 &&
      (seqLt(this.#sndWl1, seg.sequence) ||
        (this.#sndWl1 === seg.sequence && seqLe(this.#sndWl2, ack)))
    ) {
      this.#sndWnd = seg.window << this.#sndShift;
      this.#sndWl1 = seg.sequence;
      this.#sndWl2 = ack;
      if (this.#sndWnd > 0 && this.#timer.isProbing()) this.#timer.setForIdle();
    }
    if (
      acked === 0 && seg.payload.length === 0 && !fin && this.#txSent > 0 &&
      this.#sndWnd === windowBefore
    ) {
      // RFC 5681 3.2: the third duplicate ACK retransmits the segment at SND.UNA and halves
      // the congestion window.
      if (++this.#dupAcks === DUP_ACK_THRESHOLD) {
        this.#ssthresh = this.#lossThreshold();
        this.#cwnd = this.#ssthresh;
        this.#retransmitOne = true;
        this.#rtte.onRetransmit();
      }
    }

    // Our FIN acknowledged: RFC 793 state moves.
    if (this.#finAcked) {
      if (this.#state === "FIN-WAIT-1") this.#state = "FIN-WAIT-2";
      else if (this.#state === "CLOSING") this.#enterTimeWait(now);
      else if (this.#state === "LAST-ACK") {
        this.#enterClosed("closed");
        return status;
      }
    }

    if (!acceptData) return status;

    // Segment text.
    if (payload.length > 0) {
      if (!canReceive(this.#state)) {
        this.#ackPending = true;
        return status | SegmentStatus.DATA_AFTER_FIN;
      }
      const taken = this.#rx.write(payload);
      if (taken < payload.length) {
        status |= SegmentStatus.BEYOND_WINDOW;
        fin = false; // the FIN lies beyond what we kept
      }
      if (taken > 0) {
        this.#rcvNxt = seqAdd(this.#rcvNxt, taken);
        this.#events |= SocketEvent.READABLE;
      }
      this.#ackPending = true;
    }

    // FIN (RFC 793 "eighth, check the FIN bit").
    if (fin && !this.#peerFin) {
      this.#rcvNxt = seqAdd(this.#rcvNxt, 1);
      this.#peerFin = true;
      this.#ackPending = true;
      this.#events |= SocketEvent.READABLE;
      switch (this.#state) {
        case "ESTABLISHED":
          this.#state = "CLOSE-WAIT";
          break;
        case "FIN-WAIT-1":
          // Our FIN not yet acknowledged: simultaneous close.
          if (this.#finAcked) this.#enterTimeWait(now);
          else this.#state = "CLOSING";
          break;
        case "FIN-WAIT-2":
          this.#enterTimeWait(now);
          break;
        default:
          break;
      }
    }
    return status;
  }

  /** Hands due segments to `emit` (which copies them at once); stops when it returns false. */
  dispatch(now: number, emit: (seg: TcpRepr) => boolean): void {
    if (this.#state === "CLOSED") {
      if (this.#rstPending) this.#emitRst(emit);
      return;
    }
    if (this.#timer.shouldClose(now)) {
      this.#enterClosed("closed");
      return;
    }
    if (this.#timer.shouldRetransmit(now)) {
      if (this.#retransmits >= this.#maxRetransmits) {
        this.#closeReason = "timed-out";
        this.#rstPending = true;
      } else {
        this.#retransmits++;
        this.#rtte.onRto();
        if (this.#state === "SYN-RECEIVED") this.#synAckPending = true;
        else {
          // RFC 5681 3.1 (equation 4): ssthresh from the flight, cwnd back to one segment.
          this.#ssthresh = this.#lossThreshold();
          this.#cwnd = this.#mss;
          this.#goBackN();
        }
        // Restarted with the backed-off RTO when the retransmission goes out below.
        this.#timer.setForIdle();
      }
    }
    if (this.#rstPending) {
      this.#emitRst(emit);
      return;
    }
    if (this.#state === "SYN-RECEIVED") {
      if (this.#accepted && this.#synAckPending) {
        const synAck = this.#segment(TcpFlag.SYN | TcpFlag.ACK, this.#iss, new Uint8Array(0));
        synAck.options = { maxSegmentSize: this.#mss };
        if (this.#offerScale !== undefined) synAck.options.windowScale = this.#offerScale;
        // The window in a SYN-ACK is never scaled (RFC 7323 2.2).
        synAck.window = Math.min(0xffff, this.#rx.free);
        if (!emit(synAck)) return;
        this.#synAckPending = false;
        this.#synAckSent = true;
        this.#sndNxt = seqAdd(this.#iss, 1);
        this.#sndMax = this.#sndNxt;
        if (this.#retransmits === 0) this.#rtte.onSend(now, this.#sndNxt);
        this.#timer.setForRetransmit(now, this.#rtte.rto);
        this.#rcvAdvEdge = seqAdd(this.#rcvNxt, synAck.window);
      }
      return;
    }
    if (this.#timer.shouldProbeZeroWindow(now)) {
      // Linux's probe (tcp_xmit_probe_skb): an ACK carrying SND.UNA-1, which the guest must
      // answer with an ACK that shows its current window.
      if (!emit(this.#segment(TcpFlag.ACK, seqAdd(this.#sndUna, -1), new Uint8Array(0)))) return;
      this.#timer.rearmZeroWindowProbe(now);
    }
    if (this.#retransmitOne) {
      const len = Math.min(this.#mss, this.#tx.length);
      if (len > 0) {
        const seg = this.#segment(TcpFlag.ACK | TcpFlag.PSH, this.#sndUna, this.#tx.peek(0, len));
        if (!emit(seg)) return;
        this.#noteWindowSent(seg.window);
        this.#timer.setForRetransmit(now, this.#rtte.rto, true);
        this.#ackPending = false;
      }
      this.#retransmitOne = false;
    }
    for (;;) {
      const unsent = this.#tx.length - this.#txSent;
      const windowLeft = this.#sendWindowLeft();
      const len = Math.max(0, Math.min(this.#mss, unsent, windowLeft));
      const finNow = this.#finQueued && !this.#finSent && len === unsent &&
        (canSend(this.#state) || this.#finInFlightState());
      if (len === 0 && !finNow) break;
      const flags = TcpFlag.ACK | (finNow ? TcpFlag.FIN : 0) |
        (len > 0 && len === unsent ? TcpFlag.PSH : 0);
      const seg = this.#segment(flags, this.#sndNxt, this.#tx.peek(this.#txSent, len));
      if (!emit(seg)) return;
      this.#noteWindowSent(seg.window);
      const isNew = seqGe(this.#sndNxt, this.#sndMax);
      this.#txSent += len;
      this.#sndNxt = seqAdd(this.#sndNxt, len);
      if (finNow) {
        this.#finSent = true;
        this.#finSeq = this.#sndNxt;
        this.#finSeqValid = true;
        this.#sndNxt = seqAdd(this.#sndNxt, 1);
        if (this.#state === "ESTABLISHED") this.#state = "FIN-WAIT-1";
        else if (this.#state === "CLOSE-WAIT") this.#state = "LAST-ACK";
      }
      if (seqGt(this.#sndNxt, this.#sndMax)) this.#sndMax = this.#sndNxt;
      // Karn's rule: time only segments sent for the first time.
      if (isNew) this.#rtte.onSend(now, this.#sndNxt);
      this.#timer.setForRetransmit(now, this.#rtte.rto);
      this.#ackPending = false;
      if (finNow) break;
    }
    // Persist timer (RFC 1122 4.2.2.17): zero window, data waiting, nothing in flight.
    if (
      this.#sndWnd === 0 && this.#tx.length > this.#txSent && this.#sndUna === this.#sndNxt
    ) {
      this.#timer.setForZeroWindowProbe(now, this.#rtte.rto);
    }
    if (this.#ackPending) {
      const seg = this.#segment(TcpFlag.ACK, this.#sndNxt, new Uint8Array(0));
      if (!emit(seg)) return;
      this.#noteWindowSent(seg.window);
      this.#ackPending = false;
    }
  }

  /** When to call `dispatch` next: `now`-or-earlier when something is due, undefined when idle. */
  pollAt(): number | undefined {
    if (this.#rstPending) return 0;
    if (this.#state === "CLOSED") return undefined;
    if (this.#ackPending || (this.#accepted && this.#synAckPending)) return 0;
    if (this.#retransmitOne) return 0;
    if (isSynchronized(this.#state)) {
      const unsent = this.#tx.length - this.#txSent;
      const windowLeft = this.#sendWindowLeft();
      if (unsent > 0 && windowLeft > 0) return 0;
      if (
        this.#finQueued && !this.#finSent && unsent === 0 &&
        (canSend(this.#state) || this.#finInFlightState())
      ) {
        return 0;
      }
    }
    return this.#timer.pollAt();
  }

  /** Frees buffer memory of a connection that will carry no more data. */
  releaseBuffers(): void {
    this.#rx.release();
    this.#tx.release();
  }

  #finInFlightState(): boolean {
    // States where our FIN was sent before and must be sent again after go-back-N.
    return this.#state === "FIN-WAIT-1" || this.#state === "CLOSING" || this.#state === "LAST-ACK";
  }

  /** Bytes we may still put in flight: the guest's window and the congestion window. */
  #sendWindowLeft(): number {
    return Math.min(this.#sndWnd, this.#cwnd) - seqDiff(this.#sndNxt, this.#sndUna);
  }

  /** RFC 5681 equation 4: ssthresh = max(FlightSize / 2, 2 * SMSS). */
  #lossThreshold(): number {
    return Math.max(Math.floor(seqDiff(this.#sndMax, this.#sndUna) / 2), 2 * this.#mss);
  }

  #goBackN(): void {
    // Retransmit from SND.UNA; the FIN too if it is unacknowledged. Karn: no RTT sample.
    this.#rtte.onRetransmit();
    this.#txSent = 0;
    this.#sndNxt = this.#sndUna;
    if (this.#finSent && !this.#finAcked) this.#finSent = false;
    this.#dupAcks = 0;
  }

  #enterTimeWait(now: number): void {
    this.#state = "TIME-WAIT";
    this.#timer.setForClose(now, this.#timeWaitMs);
  }

  #enterClosed(reason: CloseReason): void {
    this.#state = "CLOSED";
    this.#closeReason ??= reason;
    this.#ackPending = false;
    this.#events |= SocketEvent.READABLE;
  }

  #emitRst(emit: (seg: TcpRepr) => boolean): void {
    // RFC 793 "Reset Generation": before our SYN-ACK went out the guest has no sequence number
    // of ours, so the RST carries SEQ 0 and acknowledges the SYN.
    const seq = this.#synAckSent ? this.#sndNxt : 0;
    const seg = this.#segment(TcpFlag.RST | TcpFlag.ACK, seq, new Uint8Array(0));
    seg.window = 0;
    if (!emit(seg)) return;
    this.#rstPending = false;
    this.#enterClosed(this.#closeReason ?? "aborted");
  }

  #windowField(): number {
    // Never shrink the right edge we announced (RFC 7323 2.4 leaves rounding to us: round up).
    const free = this.#rx.free;
    const promised = Math.max(0, seqDiff(this.#rcvAdvEdge, this.#rcvNxt));
    const bytes = Math.max(free, promised);
    return Math.min(0xffff, Math.ceil(bytes / (1 << this.#rcvShift)));
  }

  #guestVisibleWindow(): number {
    return Math.max(0, seqDiff(this.#rcvAdvEdge, this.#rcvNxt));
  }

  #noteWindowSent(field: number): void {
    this.#rcvAdvEdge = seqAdd(this.#rcvNxt, field << this.#rcvShift);
  }

  #segment(flags: number, sequence: number, payload: Uint8Array): TcpRepr {
    return {
      sourcePort: this.local.port,
      destinationPort: this.remote.port,
      sequence,
      acknowledgment: this.#rcvNxt,
      flags,
      window: this.#windowField(),
      options: {},
      payload,
    };
  }
}
