import { assert, assertEquals } from "../tests/_assert.ts";
import { NetworkStack, type StackEvent } from "./stack.ts";
import { drain, GATEWAY_MAC, guestTcp, guestUdp, type Parsed } from "./_test_utils.ts";
import { ipv4ToString, macToString, parseIpv4 } from "./wire/address.ts";
import { TcpFlag } from "./wire/constants.ts";
import type { TcpRepr } from "./wire/tcp.ts";
import { ArpPacket } from "./wire/arp.ts";
import { DhcpMessageType, parseDhcp } from "./dhcp.ts";
import { buildDnsQuery, DnsRcode, DnsType, parseDnsMessage, rcodeOf } from "./dns/message.ts";
import {
  ARP_REQUEST,
  DHCP_DISCOVER,
  DNS_QUERY_A,
  DNS_QUERY_AAAA,
  ICMP_ECHO_REQUEST,
  TCP_SYN,
} from "./wire/_test_data.ts";

const ip = parseIpv4;
const DEST = ip("198.18.0.1");

function events(stack: NetworkStack): StackEvent[] {
  const out: StackEvent[] = [];
  for (let e = stack.nextEvent(); e; e = stack.nextEvent()) out.push(e);
  return out;
}

function only<K extends Parsed["kind"]>(list: Parsed[], kind: K): Extract<Parsed, { kind: K }> {
  assertEquals(list.length, 1, `expected one frame, got ${list.length}`);
  assertEquals(list[0]!.kind, kind);
  return list[0] as Extract<Parsed, { kind: K }>;
}

function newStack(limits = {}): NetworkStack {
  return new NetworkStack({ randomIss: () => 5000, limits });
}

const SYN: TcpRepr = {
  sourcePort: 40000,
  destinationPort: 80,
  sequence: 100,
  acknowledgment: 0,
  flags: TcpFlag.SYN,
  window: 65535,
  options: { maxSegmentSize: 1460, windowScale: 7 },
  payload: new Uint8Array(0),
};

/** Opens and accepts a connection; returns its id. */
function connect(stack: NetworkStack, port = 40000): number {
  stack.receiveFrame(guestTcp(DEST, { ...SYN, sourcePort: port }), 0);
  const ev = events(stack).find((e) => e.type === "connect");
  assert(ev && ev.type === "connect");
  stack.accept(ev.id);
  const synAck = only(drain(stack, 0), "tcp");
  assertEquals(synAck.tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
  stack.receiveFrame(
    guestTcp(DEST, {
      ...SYN,
      sourcePort: port,
      flags: TcpFlag.ACK,
      sequence: 101,
      acknowledgment: 5001,
      options: {},
    }),
    0,
  );
  events(stack);
  return ev.id;
}

Deno.test("NetworkStack - answers the captured ARP request with the gateway MAC", () => {
  const stack = newStack();
  stack.receiveFrame(ARP_REQUEST, 0);
  const [reply] = drain(stack, 0);
  assert(reply?.kind === "arp");
  const arp = ArpPacket.newChecked(reply.frame.subarray(14));
  assertEquals(arp.operation, 2);
  assertEquals(macToString(arp.senderMac), macToString(GATEWAY_MAC));
  assertEquals(ipv4ToString(arp.senderIp), "10.0.2.2");
  assertEquals(ipv4ToString(arp.targetIp), "10.0.2.15");
});

Deno.test("NetworkStack - the captured udhcpc DISCOVER gets an OFFER by broadcast", () => {
  const stack = newStack();
  stack.receiveFrame(DHCP_DISCOVER, 0);
  const { ip: ipr, udp } = only(drain(stack, 0), "udp");
  assertEquals(ipv4ToString(ipr.destination), "255.255.255.255");
  assertEquals([udp.sourcePort, udp.destinationPort], [67, 68]);
  const offer = parseDhcp(udp.payload);
  assertEquals(offer.messageType, DhcpMessageType.OFFER);
  assertEquals(ipv4ToString(offer.yiaddr), "10.0.2.15");
});

Deno.test("NetworkStack - the captured ping to the gateway gets an echo reply", () => {
  const stack = newStack();
  stack.receiveFrame(ICMP_ECHO_REQUEST, 0);
  const { ip: ipr, icmp } = only(drain(stack, 0), "icmp");
  assertEquals(icmp.kind, "echo-reply");
  assertEquals(ipv4ToString(ipr.source), "10.0.2.2");
});

Deno.test("NetworkStack - DNS: A becomes a lookup event, AAAA is answered at once", () => {
  const stack = newStack();
  stack.receiveFrame(DNS_QUERY_AAAA, 0);
  const aaaa = only(drain(stack, 0), "udp");
  assertEquals(parseDnsMessage(aaaa.udp.payload).answers, []);
  stack.receiveFrame(DNS_QUERY_A, 0);
  assertEquals(drain(stack, 0), []);
  const [lookup] = events(stack);
  assert(lookup?.type === "dns-lookup");
  assertEquals(lookup.name, "example.test");
  stack.answerDns(lookup.id, { kind: "addresses", addresses: [DEST], ttl: 1 });
  const { ip: ipr, udp } = only(drain(stack, 0), "udp");
  assertEquals(ipv4ToString(ipr.source), "10.0.2.3");
  assertEquals(udp.sourcePort, 53);
  assertEquals(parseDnsMessage(udp.payload).answers[0]!.data, new Uint8Array([198, 18, 0, 1]));
});

Deno.test("NetworkStack - DNS to any address (8.8.8.8) is answered by us, from that address", () => {
  const stack = newStack();
  const q = buildDnsQuery("denied.test", { id: 9, type: DnsType.A });
  stack.receiveFrame(
    guestUdp(ip("8.8.8.8"), { sourcePort: 5353, destinationPort: 53, payload: q }),
    0,
  );
  const [lookup] = events(stack);
  assert(lookup?.type === "dns-lookup");
  stack.answerDns(lookup.id, { kind: "nxdomain" });
  const { ip: ipr, udp } = only(drain(stack, 0), "udp");
  assertEquals(ipv4ToString(ipr.source), "8.8.8.8");
  assertEquals(rcodeOf(parseDnsMessage(udp.payload)), DnsRcode.NXDOMAIN);
});

Deno.test("NetworkStack - other UDP gets ICMP port unreachable quoting the datagram", () => {
  const stack = newStack();
  const frame = guestUdp(ip("203.0.113.9"), {
    sourcePort: 1234,
    destinationPort: 123,
    payload: new Uint8Array(48),
  });
  stack.receiveFrame(frame, 0);
  const { icmp } = only(drain(stack, 0), "icmp");
  assert(icmp.kind === "dest-unreachable");
  assertEquals(icmp.code, 3);
  assertEquals(icmp.data, frame.subarray(14, 14 + 28));
  assertEquals(stack.counters.udpRefused, 1);
});

Deno.test("NetworkStack - the captured curl SYN raises connect; refuse sends RST at once", () => {
  const stack = newStack();
  stack.receiveFrame(TCP_SYN, 0);
  const [ev] = events(stack);
  assert(ev?.type === "connect");
  assertEquals(ipv4ToString(ev.destination.address), "198.18.0.1");
  assertEquals(ev.destination.port, 8080);
  assertEquals(drain(stack, 0), []); // no answer before the decision
  stack.refuse(ev.id);
  const { tcp } = only(drain(stack, 0), "tcp");
  assertEquals(tcp.flags, TcpFlag.RST | TcpFlag.ACK);
  assertEquals(stack.connectionCount, 0);
});

Deno.test("NetworkStack - data both ways, then close from both sides", () => {
  const stack = newStack();
  const id = connect(stack);
  stack.receiveFrame(
    guestTcp(DEST, {
      ...SYN,
      flags: TcpFlag.ACK | TcpFlag.PSH,
      sequence: 101,
      acknowledgment: 5001,
      options: {},
      payload: new TextEncoder().encode("GET /"),
    }),
    1,
  );
  assertEquals(events(stack), [{ type: "readable", id }]);
  assertEquals(new TextDecoder().decode(stack.recv(id, 100)!), "GET /");
  assertEquals(stack.send(id, new TextEncoder().encode("200 OK")), 6);
  stack.close(id);
  const out = drain(stack, 2);
  const data = out.find((p) => p.kind === "tcp" && p.tcp.payload.length > 0);
  assert(data?.kind === "tcp");
  assertEquals(new TextDecoder().decode(data.tcp.payload), "200 OK");
  assert(data.tcp.flags & TcpFlag.FIN);
  // Guest ACKs our FIN and sends its own.
  stack.receiveFrame(
    guestTcp(DEST, {
      ...SYN,
      flags: TcpFlag.ACK | TcpFlag.FIN,
      sequence: 106,
      acknowledgment: 5008,
      options: {},
    }),
    3,
  );
  assertEquals(stack.recv(id, 10), null);
  drain(stack, 3);
  // TIME-WAIT keeps the entry; it is gone after it.
  assertEquals(stack.connectionCount, 1);
  drain(stack, 3 + 60_000);
  assertEquals(stack.connectionCount, 0);
  const closed = events(stack).find((e) => e.type === "closed");
  assertEquals(closed, { type: "closed", id, reason: "closed", unread: new Uint8Array(0) });
});

Deno.test("NetworkStack - a segment of no connection gets RST", () => {
  const stack = newStack();
  stack.receiveFrame(guestTcp(DEST, { ...SYN, flags: TcpFlag.ACK, acknowledgment: 777 }), 0);
  const { tcp } = only(drain(stack, 0), "tcp");
  assertEquals(tcp.flags, TcpFlag.RST);
  assertEquals(tcp.sequence, 777);
});

Deno.test("NetworkStack - connection cap: RST and one clear limit line", () => {
  const stack = newStack({ maxConnections: 3 });
  for (let p = 1; p <= 3; p++) connect(stack, 40000 + p);
  stack.receiveFrame(guestTcp(DEST, { ...SYN, sourcePort: 41000 }), 10);
  stack.receiveFrame(guestTcp(DEST, { ...SYN, sourcePort: 41001 }), 11);
  const limit = events(stack).filter((e) => e.type === "limit");
  assertEquals(limit, [{
    type: "limit",
    message: "Cannot open more guest TCP connections: 3 open (limit 3); " +
      "new ones are refused until some close",
  }]);
  const rsts = drain(stack, 11).filter((p) => p.kind === "tcp" && p.tcp.flags & TcpFlag.RST);
  assertEquals(rsts.length, 2);
  assertEquals(stack.counters.tcpLimitRefused, 2);
});

Deno.test("NetworkStack - pending cap refuses SYNs while decisions are outstanding", () => {
  const stack = newStack({ maxPendingConnections: 2 });
  for (let p = 0; p < 3; p++) {
    stack.receiveFrame(guestTcp(DEST, { ...SYN, sourcePort: 42000 + p }), 0);
  }
  assertEquals(stack.pendingConnectionCount, 2);
  assertEquals(stack.counters.tcpLimitRefused, 1);
  assertEquals(events(stack).filter((e) => e.type === "limit"), [{
    type: "limit",
    message: "Cannot open more guest TCP connections: 2 still connecting (limit 2); " +
      "new ones are refused until those finish",
  }]);
});

Deno.test("NetworkStack - spoofed source, bad checksum and IPv6 are counted, not answered", () => {
  const stack = newStack();
  stack.receiveFrame(guestTcp(DEST, SYN, { source: ip("10.0.2.99") }), 0);
  const bad = TCP_SYN.slice();
  bad[60] = bad[60]! ^ 0xff;
  stack.receiveFrame(bad, 0);
  const v6 = TCP_SYN.slice();
  v6[12] = 0x86;
  v6[13] = 0xdd;
  stack.receiveFrame(v6, 0);
  assertEquals(drain(stack, 0), []);
  assertEquals(stack.counters.wrongSource, 1);
  assertEquals(stack.counters.badChecksum, 1);
  assertEquals(stack.counters.unsupported, 1);
  assertEquals(stack.connectionCount, 0);
});

Deno.test("NetworkStack - DNS over TCP on port 53 is served internally", () => {
  const stack = newStack();
  const dst = ip("10.0.2.3");
  stack.receiveFrame(guestTcp(dst, { ...SYN, destinationPort: 53 }), 0);
  assertEquals(events(stack), []); // no connect event: the stack serves it
  only(drain(stack, 0), "tcp");
  const q = buildDnsQuery("a.test", { id: 77, type: DnsType.A });
  const framed = new Uint8Array(2 + q.length);
  framed[1] = q.length;
  framed.set(q, 2);
  stack.receiveFrame(
    guestTcp(dst, {
      ...SYN,
      destinationPort: 53,
      flags: TcpFlag.ACK | TcpFlag.PSH,
      sequence: 101,
      acknowledgment: 5001,
      options: {},
      payload: framed,
    }),
    0,
  );
  const [lookup] = events(stack);
  assert(lookup?.type === "dns-lookup");
  stack.answerDns(lookup.id, { kind: "addresses", addresses: [DEST], ttl: 1 });
  const reply = drain(stack, 0).find((p) => p.kind === "tcp" && p.tcp.payload.length > 0);
  assert(reply?.kind === "tcp");
  const msg = parseDnsMessage(reply.tcp.payload.subarray(2));
  assertEquals(msg.id, 77);
  assertEquals(msg.answers.length, 1);
});

Deno.test("NetworkStack - a full link stops dispatch; the rest goes out later", () => {
  const stack = newStack();
  const id = connect(stack);
  stack.send(id, new Uint8Array(10_000));
  let n = 0;
  stack.dispatch(0, () => ++n <= 2);
  assertEquals(n, 3); // two accepted, the third refused
  assertEquals(stack.pollAt(), 0);
  const rest = drain(stack, 0);
  assertEquals(rest.length, 5); // 10000 bytes at MSS 1460: 7 segments, 2 already sent
});

Deno.test("NetworkStack - an undecided connection is refused after the pending timeout", () => {
  const stack = newStack({ pendingTimeoutMs: 1000 });
  stack.receiveFrame(guestTcp(DEST, SYN), 0);
  events(stack);
  assertEquals(stack.pollAt(), 1000);
  assertEquals(drain(stack, 999), []);
  const { tcp } = only(drain(stack, 1000), "tcp");
  assertEquals(tcp.flags & TcpFlag.RST, TcpFlag.RST);
  assertEquals(stack.pendingConnectionCount, 0);
  assertEquals(stack.connectionCount, 0);
});
