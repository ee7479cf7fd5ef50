/**
 * Fuzz-style tests: thousands of malformed, truncated, mutated and random frames (seeded, so a
 * failure replays) fed to the stack. The stack must not throw, must not hit an internal error,
 * and every table must stay within its cap.
 */

import { assert, assertEquals } from "../tests/_assert.ts";
import { NetworkStack } from "./stack.ts";
import { guestTcp, guestUdp, seededRandom } from "./_test_utils.ts";
import { parseIpv4 } from "./wire/address.ts";
import { TcpFlag } from "./wire/constants.ts";
import { buildDnsQuery } from "./dns/message.ts";
import {
  ARP_REQUEST,
  DHCP_DISCOVER,
  DNS_QUERY_A,
  DNS_QUERY_AAAA,
  ICMP_ECHO_REQUEST,
  TCP_SYN,
} from "./wire/_test_data.ts";

const CAPTURED = [
  ARP_REQUEST,
  DHCP_DISCOVER,
  DNS_QUERY_A,
  DNS_QUERY_AAAA,
  ICMP_ECHO_REQUEST,
  TCP_SYN,
];
const LIMITS = {
  maxConnections: 64,
  maxPendingConnections: 16,
  rxBufferBytes: 16 * 1024,
  txBufferBytes: 16 * 1024,
  maxPendingDnsLookups: 8,
  maxControlFrames: 64,
  maxEvents: 512,
};

function checkBounds(stack: NetworkStack, label: string): void {
  assertEquals(stack.counters.internalErrors, 0, `${label}: ${stack.lastInternalError}`);
  assert(stack.connectionCount <= LIMITS.maxConnections, `${label}: connections`);
  assert(stack.pendingConnectionCount <= LIMITS.maxPendingConnections, `${label}: pending`);
  assert(stack.controlQueueLength <= LIMITS.maxControlFrames, `${label}: control queue`);
  assert(stack.eventQueueLength <= LIMITS.maxEvents, `${label}: events`);
  assert(stack.pendingDnsCount <= LIMITS.maxPendingDnsLookups, `${label}: dns`);
  const perConn = LIMITS.rxBufferBytes + LIMITS.txBufferBytes;
  assert(stack.allocatedBytes <= stack.connectionCount * perConn, `${label}: buffer memory`);
}

/** Plays the I/O layer: takes random decisions, reads, writes, answers DNS, sometimes not. */
function actRandomly(stack: NetworkStack, rand: () => number, now: number): void {
  for (let e = stack.nextEvent(); e; e = stack.nextEvent()) {
    const r = rand();
    switch (e.type) {
      case "connect":
        if (r < 0.6) stack.accept(e.id);
        else if (r < 0.9) stack.refuse(e.id);
        break; // else: leave it pending
      case "readable":
        if (r < 0.7) stack.recv(e.id, Math.floor(rand() * 4096));
        if (r > 0.9) stack.close(e.id);
        break;
      case "writable":
        stack.send(e.id, new Uint8Array(Math.floor(rand() * 8192)));
        if (r > 0.95) stack.abort(e.id);
        break;
      case "dns-lookup":
        if (r < 0.8) stack.answerDns(e.id, { kind: "addresses", addresses: [0xc6120001], ttl: 1 });
        break;
      default:
        break;
    }
  }
  stack.dispatch(now, () => rand() < 0.95);
}

Deno.test("NetworkStack fuzz - random bytes, truncations and mutations of captured frames", () => {
  for (const checksum of ["verify", "ignore"] as const) {
    const rand = seededRandom(checksum === "verify" ? 1 : 2);
    const stack = new NetworkStack({
      checksum,
      limits: LIMITS,
      randomIss: () => (rand() * 2 ** 32) >>> 0,
    });
    let now = 0;
    for (let i = 0; i < 6000; i++) {
      now += rand() * 50;
      const pick = rand();
      let frame: Uint8Array;
      const base = CAPTURED[Math.floor(rand() * CAPTURED.length)]!;
      if (pick < 0.2) {
        frame = crypto.getRandomValues(new Uint8Array(Math.floor(rand() * 1600)));
      } else if (pick < 0.5) {
        frame = base.slice(0, Math.floor(rand() * (base.length + 1)));
      } else {
        frame = base.slice();
        const flips = 1 + Math.floor(rand() * 6);
        for (let k = 0; k < flips; k++) {
          const at = Math.floor(rand() * frame.length);
          frame[at] = Math.floor(rand() * 256);
        }
      }
      stack.receiveFrame(frame, now);
      actRandomly(stack, rand, now);
      if (i % 500 === 0) checkBounds(stack, `${checksum} frame ${i}`);
    }
    checkBounds(stack, checksum);
    assert(stack.counters.malformed + stack.counters.badChecksum > 1000, "most frames rejected");
  }
});

Deno.test("NetworkStack fuzz - valid-checksum TCP segments with random fields drive every state", () => {
  const rand = seededRandom(3);
  const stack = new NetworkStack({ limits: LIMITS, timeWaitMs: 500 });
  const dest = parseIpv4("198.18.0.1");
  const seqs = [0, 1, 100, 0x7fffffff, 0xfffffff0];
  let now = 0;
  for (let i = 0; i < 20000; i++) {
    now += rand() * 20;
    const port = 1000 + Math.floor(rand() * 80);
    const flagsPick = rand();
    const flags = flagsPick < 0.15
      ? TcpFlag.SYN
      : flagsPick < 0.9
      ? TcpFlag.ACK | (rand() < 0.1 ? TcpFlag.FIN : 0) | (rand() < 0.03 ? TcpFlag.RST : 0)
      : Math.floor(rand() * 64) & ~(TcpFlag.SYN | TcpFlag.FIN);
    const frame = guestTcp(dest, {
      sourcePort: port,
      destinationPort: 80 + Math.floor(rand() * 2) * (53 - 80),
      sequence: (seqs[Math.floor(rand() * seqs.length)]! + Math.floor(rand() * 3000)) >>> 0,
      acknowledgment: (rand() * 2 ** 32) >>> 0,
      flags,
      window: Math.floor(rand() * 65536),
      options: rand() < 0.5
        ? { maxSegmentSize: Math.floor(rand() * 65536), windowScale: Math.floor(rand() * 20) }
        : {},
      payload: new Uint8Array(Math.floor(rand() * 1500)).fill(Math.floor(rand() * 256)),
    });
    stack.receiveFrame(frame, now);
    if (rand() < 0.05) {
      const q = buildDnsQuery(`n${i % 50}.test`, { id: i & 0xffff, type: rand() < 0.5 ? 1 : 28 });
      stack.receiveFrame(
        guestUdp(parseIpv4("10.0.2.3"), { sourcePort: 999, destinationPort: 53, payload: q }),
        now,
      );
    }
    actRandomly(stack, rand, now);
    if (i % 1000 === 0) checkBounds(stack, `segment ${i}`);
  }
  checkBounds(stack, "end");
  // Let every timer run out (retransmissions give up, TIME-WAIT ends): still within bounds,
  // and connections with unacknowledged data are gone.
  for (let t = 0; t < 200; t++) {
    now += 5000;
    for (let e = stack.nextEvent(); e; e = stack.nextEvent()) {
      if (e.type === "connect") stack.refuse(e.id);
      if (e.type === "readable") stack.recv(e.id, 1 << 20);
    }
    stack.dispatch(now, () => true);
  }
  checkBounds(stack, "drained");
  assertEquals(stack.pendingConnectionCount, 0);
  assert(stack.counters.tcpConnections > 100, "many connections were opened");
});
