import { assert, assertEquals } from "../../tests/_assert.ts";
import { TcpFlag } from "../wire/constants.ts";
import { seqAdd } from "../wire/seq.ts";
import type { TcpRepr } from "../wire/tcp.ts";
import { parseIpv4 } from "../wire/address.ts";
import { SegmentStatus, SocketEvent, TcpSocket, type TcpSocketOptions } from "./socket.ts";

// Fixtures: guest 10.0.2.15:49500 connects to 198.18.0.1:80. Times are explicit milliseconds.
const GUEST_ISS = 1000;
const LOCAL_ISS = 0xfffffff0; // wraps during the tests on purpose
const GUEST_SHIFT = 7;
const OPTS: TcpSocketOptions = {
  local: { address: parseIpv4("198.18.0.1"), port: 80 },
  remote: { address: parseIpv4("10.0.2.15"), port: 49500 },
  iss: LOCAL_ISS,
  mss: 1460,
  rxCapacity: 8192,
  txCapacity: 8192,
};
const SYN: TcpRepr = {
  sourcePort: 49500,
  destinationPort: 80,
  sequence: GUEST_ISS,
  acknowledgment: 0,
  flags: TcpFlag.SYN,
  window: 64240,
  options: { maxSegmentSize: 1460, windowScale: GUEST_SHIFT, sackPermitted: true },
  payload: new Uint8Array(0),
};
/** What the guest sends after the handshake; tests override only the fields that matter. */
const SEND_TEMPL: TcpRepr = {
  ...SYN,
  sequence: GUEST_ISS + 1,
  acknowledgment: seqAdd(LOCAL_ISS, 1),
  flags: TcpFlag.ACK,
  window: 1000, // scaled by 2^7: 128000 bytes
  options: {},
};

function send(s: TcpSocket, now: number, over: Partial<TcpRepr> = {}): number {
  return s.process(now, { ...SEND_TEMPL, ...over });
}

/** Everything the socket emits at `now` (payloads copied, since they are views). */
function recv(s: TcpSocket, now: number): TcpRepr[] {
  const out: TcpRepr[] = [];
  s.dispatch(now, (seg) => {
    out.push({ ...seg, payload: seg.payload.slice(), options: { ...seg.options } });
    return true;
  });
  return out;
}

function recvNothing(s: TcpSocket, now: number): void {
  assertEquals(recv(s, now), []);
}

function bytes(n: number, fill = 0x61): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

function socketSynReceived(opts: Partial<TcpSocketOptions> = {}): TcpSocket {
  return TcpSocket.fromSyn(SYN, { ...OPTS, ...opts });
}

function socketEstablished(opts: Partial<TcpSocketOptions> = {}): TcpSocket {
  const s = socketSynReceived(opts);
  s.accept();
  recv(s, 0);
  send(s, 0);
  assertEquals(s.state, "ESTABLISHED");
  s.takeEvents();
  return s;
}

function socketCloseWait(): TcpSocket {
  const s = socketEstablished();
  send(s, 0, { flags: TcpFlag.ACK | TcpFlag.FIN });
  recv(s, 0);
  assertEquals(s.state, "CLOSE-WAIT");
  return s;
}

function socketLastAck(): TcpSocket {
  const s = socketCloseWait();
  s.close();
  recv(s, 0);
  assertEquals(s.state, "LAST-ACK");
  return s;
}

function socketFinWait1(): TcpSocket {
  const s = socketEstablished();
  s.close();
  const [fin] = recv(s, 0);
  assert(fin && fin.flags & TcpFlag.FIN);
  assertEquals(s.state, "FIN-WAIT-1");
  return s;
}

const AFTER_OUR_FIN = seqAdd(LOCAL_ISS, 2);

function socketFinWait2(): TcpSocket {
  const s = socketFinWait1();
  send(s, 0, { acknowledgment: AFTER_OUR_FIN });
  assertEquals(s.state, "FIN-WAIT-2");
  return s;
}

function socketClosing(): TcpSocket {
  const s = socketFinWait1();
  send(s, 0, { flags: TcpFlag.ACK | TcpFlag.FIN });
  assertEquals(s.state, "CLOSING");
  return s;
}

function socketTimeWait(): TcpSocket {
  const s = socketFinWait2();
  send(s, 0, { flags: TcpFlag.ACK | TcpFlag.FIN, acknowledgment: AFTER_OUR_FIN });
  assertEquals(s.state, "TIME-WAIT");
  recv(s, 0);
  return s;
}

// =========================================================================================
// SYN-RECEIVED

Deno.test("test_syn_received_accept_sends_syn_ack_with_mss_and_window_scale", () => {
  const s = socketSynReceived();
  recvNothing(s, 0); // no decision yet: nothing goes out
  assertEquals(s.pollAt(), undefined);
  s.accept();
  assertEquals(s.pollAt(), 0);
  const [synAck, ...rest] = recv(s, 5);
  assertEquals(rest, []);
  assertEquals(synAck!.flags, TcpFlag.SYN | TcpFlag.ACK);
  assertEquals(synAck!.sequence, LOCAL_ISS);
  assertEquals(synAck!.acknowledgment, GUEST_ISS + 1);
  // 8192-byte buffer fits in 16 bits: shift 0 offered, because the guest offered scaling.
  assertEquals(synAck!.options, { maxSegmentSize: 1460, windowScale: 0 });
  assertEquals(synAck!.window, 8192);
});

Deno.test("test_syn_received_large_buffer_offers_window_scale", () => {
  const s = socketSynReceived({ rxCapacity: 256 * 1024 });
  s.accept();
  const [synAck] = recv(s, 0);
  assertEquals(synAck!.options.windowScale, 3);
  assertEquals(synAck!.window, 0xffff); // SYN-ACK windows are never scaled
});

Deno.test("test_syn_received_no_scale_option_when_guest_offers_none", () => {
  const s = TcpSocket.fromSyn({ ...SYN, options: {} }, { ...OPTS, rxCapacity: 256 * 1024 });
  s.accept();
  const [synAck] = recv(s, 0);
  // RFC 1122: no MSS option means 536.
  assertEquals(synAck!.options, { maxSegmentSize: 536 });
});

Deno.test("test_syn_received_refuse_sends_rst_with_seq_zero", () => {
  const s = socketSynReceived();
  s.refuse();
  const [rst] = recv(s, 0);
  assertEquals(rst!.flags, TcpFlag.RST | TcpFlag.ACK);
  assertEquals(rst!.sequence, 0);
  assertEquals(rst!.acknowledgment, GUEST_ISS + 1);
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "refused");
  recvNothing(s, 1);
});

Deno.test("test_syn_received_syn_retransmit_resends_syn_ack", () => {
  const s = socketSynReceived();
  s.accept();
  recv(s, 0);
  assertEquals(send(s, 100, SYN), SegmentStatus.OK);
  const [again] = recv(s, 100);
  assertEquals(again!.flags, TcpFlag.SYN | TcpFlag.ACK);
});

Deno.test("test_syn_received_syn_ack_retransmits_on_timeout", () => {
  const s = socketSynReceived();
  s.accept();
  recv(s, 0);
  recvNothing(s, 999);
  const [again] = recv(s, 1000);
  assertEquals(again!.flags, TcpFlag.SYN | TcpFlag.ACK);
  recvNothing(s, 2999);
  assertEquals(recv(s, 3000).length, 1);
});

Deno.test("test_syn_received_ack_establishes_and_data_in_it_is_kept", () => {
  const s = socketSynReceived();
  s.accept();
  recv(s, 0);
  send(s, 10, { payload: bytes(10) });
  assertEquals(s.state, "ESTABLISHED");
  assertEquals(s.recvAvailable, 10);
  assertEquals(s.sendWindow, 1000 << GUEST_SHIFT);
});

Deno.test("test_syn_received_wrong_ack_is_counted_and_dropped", () => {
  const s = socketSynReceived();
  s.accept();
  recv(s, 0);
  assertEquals(send(s, 0, { acknowledgment: 12345 }), SegmentStatus.INVALID_ACK);
  assertEquals(s.state, "SYN-RECEIVED");
});

Deno.test("test_syn_received_rst_closes", () => {
  const s = socketSynReceived();
  s.accept();
  recv(s, 0);
  send(s, 0, { flags: TcpFlag.RST });
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "reset-by-guest");
});

// =========================================================================================
// ESTABLISHED

Deno.test("test_established_recv_data_is_acked_once_per_batch", () => {
  const s = socketEstablished();
  send(s, 0, { payload: bytes(100) });
  send(s, 0, { sequence: GUEST_ISS + 101, payload: bytes(50, 0x62) });
  assertEquals(s.takeEvents() & SocketEvent.READABLE, SocketEvent.READABLE);
  const segs = recv(s, 0);
  assertEquals(segs.length, 1);
  assertEquals(segs[0]!.acknowledgment, GUEST_ISS + 151);
  assertEquals(segs[0]!.window, 8192 - 150);
  assertEquals(s.recv(1000).length, 150);
});

Deno.test("test_established_send_splits_by_mss_and_sets_psh_on_the_last", () => {
  const s = socketEstablished();
  assertEquals(s.send(bytes(3000)), 3000);
  const segs = recv(s, 0);
  assertEquals(segs.map((x) => x.payload.length), [1460, 1460, 80]);
  assertEquals(segs.map((x) => x.sequence), [
    seqAdd(LOCAL_ISS, 1),
    seqAdd(LOCAL_ISS, 1461),
    seqAdd(LOCAL_ISS, 2921),
  ]);
  assertEquals(segs[2]!.flags, TcpFlag.ACK | TcpFlag.PSH);
  // Acknowledged data frees send capacity and raises WRITABLE.
  assertEquals(s.sendCapacity, 8192 - 3000);
  send(s, 1, { acknowledgment: seqAdd(LOCAL_ISS, 3001) });
  assertEquals(s.sendCapacity, 8192);
  assertEquals(s.takeEvents() & SocketEvent.WRITABLE, SocketEvent.WRITABLE);
});

Deno.test("test_established_send_respects_the_guest_window", () => {
  const s = socketEstablished();
  send(s, 0, { window: 16 }); // 16 << 7 = 2048 bytes
  s.send(bytes(5000));
  const segs = recv(s, 0);
  assertEquals(segs.map((x) => x.payload.length), [1460, 588]);
  // The host side can queue no more than the buffer: the window throttles host reads.
  assertEquals(s.sendCapacity, 8192 - 5000);
  send(s, 1, { acknowledgment: seqAdd(LOCAL_ISS, 2049), window: 16 });
  assertEquals(recv(s, 1).map((x) => x.payload.length), [1460, 588]);
});

Deno.test("test_established_window_shrinks_when_host_is_slow_then_updates", () => {
  const s = socketEstablished({ rxCapacity: 4096 });
  let seq = GUEST_ISS + 1;
  for (let i = 0; i < 3; i++) {
    send(s, 0, { sequence: seq, payload: bytes(1460) });
    seq += 1460;
  }
  const [ack] = recv(s, 0);
  // 4380 bytes offered, 4096 kept: window closed, the excess is dropped (guest retransmits).
  assertEquals(ack!.window, 0);
  assertEquals(ack!.acknowledgment, GUEST_ISS + 1 + 4096);
  // The host side drains 100 bytes: too little to announce (SWS avoidance).
  s.recv(100);
  recvNothing(s, 1);
  // Draining a full MSS announces the opened window at once.
  s.recv(2000);
  const [update] = recv(s, 2);
  assertEquals(update!.window, 2100);
});

Deno.test("test_established_out_of_order_segment_gets_a_duplicate_ack", () => {
  const s = socketEstablished();
  assertEquals(
    send(s, 0, { sequence: GUEST_ISS + 500, payload: bytes(10) }),
    SegmentStatus.OUT_OF_ORDER,
  );
  const [ack] = recv(s, 0);
  assertEquals(ack!.acknowledgment, GUEST_ISS + 1);
  assertEquals(s.recvAvailable, 0);
});

Deno.test("test_established_partly_old_segment_is_trimmed", () => {
  const s = socketEstablished();
  send(s, 0, { payload: new Uint8Array([1, 2, 3]) });
  send(s, 0, { payload: new Uint8Array([1, 2, 3, 4, 5]) });
  assertEquals(s.recv(100), new Uint8Array([1, 2, 3, 4, 5]));
});

Deno.test("test_established_duplicate_segment_is_acked_again", () => {
  const s = socketEstablished();
  send(s, 0, { payload: bytes(10) });
  recv(s, 0);
  assertEquals(send(s, 1, { payload: bytes(10) }), SegmentStatus.DUPLICATE);
  assertEquals(recv(s, 1).length, 1);
  assertEquals(s.recvAvailable, 10);
});

Deno.test("test_established_rst_at_rcv_nxt_closes_elsewhere_challenge_ack", () => {
  const s = socketEstablished();
  assertEquals(send(s, 0, { flags: TcpFlag.RST, sequence: GUEST_ISS + 5 }), SegmentStatus.BAD_RST);
  assertEquals(recv(s, 0).length, 1);
  assertEquals(s.state, "ESTABLISHED");
  send(s, 0, { flags: TcpFlag.RST });
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "reset-by-guest");
});

Deno.test("test_established_syn_gets_challenge_ack", () => {
  const s = socketEstablished();
  assertEquals(send(s, 0, { flags: TcpFlag.SYN }), SegmentStatus.UNEXPECTED_SYN);
  assertEquals(recv(s, 0)[0]!.flags, TcpFlag.ACK);
  assertEquals(s.state, "ESTABLISHED");
});

Deno.test("test_established_ack_beyond_snd_nxt_is_dropped_with_ack", () => {
  const s = socketEstablished();
  const status = send(s, 0, { acknowledgment: seqAdd(LOCAL_ISS, 100), payload: bytes(5) });
  assertEquals(status, SegmentStatus.INVALID_ACK);
  assertEquals(s.recvAvailable, 0);
  assertEquals(recv(s, 0).length, 1);
});

Deno.test("test_established_segment_without_ack_is_dropped", () => {
  const s = socketEstablished();
  assertEquals(send(s, 0, { flags: 0, payload: bytes(5) }), SegmentStatus.NO_ACK);
  assertEquals(s.recvAvailable, 0);
});

Deno.test("test_established_fin_enters_close_wait_and_ends_the_stream", () => {
  const s = socketEstablished();
  send(s, 0, { flags: TcpFlag.ACK | TcpFlag.FIN, payload: bytes(3) });
  assertEquals(s.state, "CLOSE-WAIT");
  const [ack] = recv(s, 0);
  assertEquals(ack!.acknowledgment, GUEST_ISS + 1 + 3 + 1);
  assert(!s.recvFinished);
  s.recv(10);
  assert(s.recvFinished);
});

Deno.test("test_established_close_sends_fin_after_queued_data", () => {
  const s = socketEstablished();
  s.send(bytes(100));
  s.close();
  assertEquals(s.sendCapacity, 0);
  const segs = recv(s, 0);
  assertEquals(segs.length, 1);
  assertEquals(segs[0]!.flags, TcpFlag.ACK | TcpFlag.FIN | TcpFlag.PSH);
  assertEquals(s.state, "FIN-WAIT-1");
});

Deno.test("test_retransmit_exponential_backoff", () => {
  const s = socketEstablished();
  const rto = s.rto;
  s.send(bytes(10));
  assertEquals(recv(s, 0).length, 1);
  recvNothing(s, rto - 1);
  let segs = recv(s, rto);
  assertEquals(segs.length, 1);
  assertEquals(segs[0]!.sequence, seqAdd(LOCAL_ISS, 1));
  // Backed off: the next one waits twice as long.
  recvNothing(s, rto + 2 * rto - 1);
  segs = recv(s, rto + 2 * rto);
  assertEquals(segs.length, 1);
  recvNothing(s, 3 * rto + 4 * rto - 1);
  assertEquals(recv(s, 3 * rto + 4 * rto).length, 1);
});

Deno.test("test_retransmit_timeout_resends_one_segment_then_slow_starts", () => {
  const s = socketEstablished();
  s.send(bytes(5 * 1460));
  assertEquals(recv(s, 0).length, 5);
  // Timeout: the congestion window falls to one segment, so one retransmission, not five.
  const resent = recv(s, s.pollAt()!);
  assertEquals(resent.map((x) => x.sequence), [seqAdd(LOCAL_ISS, 1)]);
  // The guest acknowledges it: slow start allows two more.
  send(s, 1001, { acknowledgment: seqAdd(LOCAL_ISS, 1461) });
  assertEquals(recv(s, 1001).map((x) => x.sequence), [
    seqAdd(LOCAL_ISS, 1461),
    seqAdd(LOCAL_ISS, 2921),
  ]);
});

Deno.test("test_established_cumulative_ack_beyond_snd_nxt_after_go_back_n_is_accepted", () => {
  const s = socketEstablished();
  s.send(bytes(3 * 1460));
  recv(s, 0);
  recv(s, s.pollAt()!); // spurious timeout: SND.NXT goes back to SND.UNA
  // The originals had arrived: the guest acknowledges everything ever sent.
  const status = send(s, 1001, { acknowledgment: seqAdd(LOCAL_ISS, 1 + 3 * 1460) });
  assertEquals(status, SegmentStatus.OK);
  assertEquals(s.sendQueued, 0);
  assertEquals(s.pollAt(), undefined); // nothing outstanding: timer idle
  // And data queued afterwards continues from the right sequence number.
  s.send(bytes(10));
  assertEquals(recv(s, 1002)[0]!.sequence, seqAdd(LOCAL_ISS, 1 + 3 * 1460));
});

Deno.test("test_retransmit_gives_up_with_rst_after_max_retransmits", () => {
  const s = socketEstablished({ maxRetransmits: 2 });
  s.send(bytes(10));
  recv(s, 0);
  let now = 0;
  for (let i = 0; i < 2; i++) {
    now = s.pollAt()!;
    assertEquals(recv(s, now)[0]!.payload.length, 10);
  }
  now = s.pollAt()!;
  const [rst] = recv(s, now);
  assertEquals(rst!.flags & TcpFlag.RST, TcpFlag.RST);
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "timed-out");
});

Deno.test("test_established_rtt_sample_lowers_rto", () => {
  const s = socketEstablished();
  s.send(bytes(10));
  recv(s, 100);
  send(s, 105, { acknowledgment: seqAdd(LOCAL_ISS, 11) });
  assert(s.rto < 1000);
});

Deno.test("test_established_fast_retransmit_after_three_duplicate_acks", () => {
  const s = socketEstablished();
  s.send(bytes(4000));
  recv(s, 0);
  send(s, 1, { acknowledgment: seqAdd(LOCAL_ISS, 1461) });
  for (let i = 0; i < 2; i++) send(s, 1, { acknowledgment: seqAdd(LOCAL_ISS, 1461) });
  recvNothing(s, 1);
  send(s, 1, { acknowledgment: seqAdd(LOCAL_ISS, 1461) });
  const segs = recv(s, 1);
  assertEquals(segs[0]!.sequence, seqAdd(LOCAL_ISS, 1461));
});

Deno.test("test_established_zero_window_probe_backs_off_and_resumes", () => {
  const s = socketEstablished();
  send(s, 0, { window: 0 });
  s.send(bytes(100));
  recvNothing(s, 0);
  const first = s.pollAt()!;
  assertEquals(first, s.rto);
  recvNothing(s, first - 1);
  const [probe] = recv(s, first);
  assertEquals(probe!.sequence, LOCAL_ISS); // SND.UNA - 1
  assertEquals(probe!.payload.length, 0);
  assertEquals(s.pollAt(), first + 2 * first);
  // The guest answers the probe with an open window: data flows and the probe stops.
  send(s, first + 1, { window: 10 });
  const [data] = recv(s, first + 1);
  assertEquals(data!.payload.length, 100);
  assert(s.pollAt() !== first + 2 * first);
});

Deno.test("test_established_abort_sends_rst", () => {
  const s = socketEstablished();
  s.abort();
  const [rst] = recv(s, 0);
  assertEquals(rst!.flags, TcpFlag.RST | TcpFlag.ACK);
  assertEquals(rst!.sequence, seqAdd(LOCAL_ISS, 1));
  assertEquals(s.closeReason, "aborted");
});

// =========================================================================================
// FIN-WAIT-1, FIN-WAIT-2, CLOSING, TIME-WAIT (we closed first)

Deno.test("test_fin_wait_1_ack_of_fin_enters_fin_wait_2", () => {
  socketFinWait2();
});

Deno.test("test_fin_wait_1_fin_without_ack_enters_closing", () => {
  socketClosing();
});

Deno.test("test_fin_wait_1_fin_with_ack_enters_time_wait", () => {
  const s = socketFinWait1();
  send(s, 0, { flags: TcpFlag.ACK | TcpFlag.FIN, acknowledgment: AFTER_OUR_FIN });
  assertEquals(s.state, "TIME-WAIT");
});

Deno.test("test_fin_wait_1_fin_is_retransmitted", () => {
  const s = socketFinWait1();
  const [fin] = recv(s, s.pollAt()!);
  assertEquals(fin!.flags & TcpFlag.FIN, TcpFlag.FIN);
  assertEquals(fin!.sequence, seqAdd(LOCAL_ISS, 1));
});

Deno.test("test_fin_wait_1_ack_of_fin_after_its_retransmission_enters_fin_wait_2", () => {
  const s = socketEstablished();
  s.send(bytes(100));
  s.close();
  recv(s, 0);
  recv(s, s.pollAt()!); // data and FIN go out again
  send(s, 1001, { acknowledgment: seqAdd(LOCAL_ISS, 102) });
  assertEquals(s.state, "FIN-WAIT-2");
});

Deno.test("test_fin_wait_2_guest_data_still_flows_then_fin_enters_time_wait", () => {
  const s = socketFinWait2();
  send(s, 0, { acknowledgment: AFTER_OUR_FIN, payload: bytes(20) });
  assertEquals(s.recvAvailable, 20);
  send(s, 0, {
    acknowledgment: AFTER_OUR_FIN,
    sequence: GUEST_ISS + 21,
    flags: TcpFlag.ACK | TcpFlag.FIN,
  });
  assertEquals(s.state, "TIME-WAIT");
  assertEquals(recv(s, 0)[0]!.acknowledgment, GUEST_ISS + 22);
});

Deno.test("test_closing_ack_enters_time_wait", () => {
  const s = socketClosing();
  send(s, 0, { sequence: GUEST_ISS + 2, acknowledgment: AFTER_OUR_FIN });
  assertEquals(s.state, "TIME-WAIT");
});

Deno.test("test_time_wait_retransmitted_fin_is_acked_and_restarts_the_timer", () => {
  const s = socketTimeWait();
  assertEquals(s.pollAt(), 2000);
  send(s, 1500, { flags: TcpFlag.ACK | TcpFlag.FIN, acknowledgment: AFTER_OUR_FIN });
  assertEquals(recv(s, 1500).length, 1);
  assertEquals(s.pollAt(), 3500);
});

Deno.test("test_time_wait_expires_to_closed", () => {
  const s = socketTimeWait();
  recvNothing(s, 1999);
  assertEquals(s.state, "TIME-WAIT");
  recvNothing(s, 2000);
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "closed");
});

// =========================================================================================
// CLOSE-WAIT, LAST-ACK (the guest closed first)

Deno.test("test_close_wait_host_data_still_flows_to_the_guest", () => {
  const s = socketCloseWait();
  assertEquals(s.send(bytes(10)), 10);
  const [data] = recv(s, 0);
  assertEquals(data!.payload.length, 10);
  assertEquals(data!.acknowledgment, GUEST_ISS + 2);
});

Deno.test("test_close_wait_close_enters_last_ack", () => {
  socketLastAck();
});

Deno.test("test_last_ack_ack_of_fin_closes", () => {
  const s = socketLastAck();
  send(s, 0, { sequence: GUEST_ISS + 2, acknowledgment: AFTER_OUR_FIN });
  assertEquals(s.state, "CLOSED");
  assertEquals(s.closeReason, "closed");
});

Deno.test("test_last_ack_data_after_fin_is_counted", () => {
  const s = socketLastAck();
  const status = send(s, 0, { sequence: GUEST_ISS + 2, payload: bytes(4) });
  assertEquals(status & SegmentStatus.DATA_AFTER_FIN, SegmentStatus.DATA_AFTER_FIN);
});
