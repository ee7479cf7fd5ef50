/**
 * Test helpers: build frames as the guest would send them and parse what the stack sends back.
 * Frames are built with the wire layer's emitters, so tests exercise the same code both ways.
 *
 * @module
 */

import { parseIpv4, parseMac } from "./wire/address.ts";
import { EtherType, IpProtocol } from "./wire/constants.ts";
import { ETHERNET_HEADER_LEN, EthernetFrame, EthernetRepr } from "./wire/ethernet.ts";
import { Icmpv4Packet, Icmpv4Repr } from "./wire/icmpv4.ts";
import { IPV4_HEADER_LEN, Ipv4Packet, Ipv4Repr } from "./wire/ipv4.ts";
import { TcpPacket, TcpRepr } from "./wire/tcp.ts";
import { UdpPacket, UdpRepr } from "./wire/udp.ts";
import type { NetworkStack } from "./stack.ts";

/** The guest's MAC in tests. */
export const GUEST_MAC = parseMac("02:00:00:00:00:0f");
/** The guest's address in tests. */
export const GUEST_IP = parseIpv4("10.0.2.15");
/** The stack's MAC. */
export const GATEWAY_MAC = parseMac("52:55:0a:00:02:02");

/** Wraps an IPv4 payload into an Ethernet frame from the guest. */
export function guestIpFrame(
  l4: { protocol: number; length: number; fill: (l4: Uint8Array) => void },
  addrs: { destination: number; source?: number },
): Uint8Array {
  const { protocol, length: l4Len, fill } = l4;
  const dst = addrs.destination;
  const src = addrs.source ?? GUEST_IP;
  const out = new Uint8Array(ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + l4Len);
  EthernetRepr.emit(
    { source: GUEST_MAC, destination: GATEWAY_MAC, etherType: EtherType.IPV4 },
    EthernetFrame.newUnchecked(out),
  );
  const ip = out.subarray(ETHERNET_HEADER_LEN);
  fill(ip.subarray(IPV4_HEADER_LEN));
  Ipv4Repr.emit(
    { source: src, destination: dst, protocol, payloadLen: l4Len, ttl: 64 },
    Ipv4Packet.newUnchecked(ip),
  );
  return out;
}

/** A TCP segment from the guest to `dst`. */
export function guestTcp(dst: number, seg: TcpRepr, opts: { source?: number } = {}): Uint8Array {
  const src = opts.source ?? GUEST_IP;
  return guestIpFrame({
    protocol: IpProtocol.TCP,
    length: TcpRepr.bufferLen(seg),
    fill: (b) => TcpRepr.emit(seg, TcpPacket.newUnchecked(b), { source: src, destination: dst }),
  }, { destination: dst, source: src });
}

/** A UDP datagram from the guest. */
export function guestUdp(dst: number, udp: UdpRepr, opts: { source?: number } = {}): Uint8Array {
  const src = opts.source ?? GUEST_IP;
  return guestIpFrame({
    protocol: IpProtocol.UDP,
    length: UdpRepr.bufferLen(udp),
    fill: (b) => UdpRepr.emit(udp, UdpPacket.newUnchecked(b), { source: src, destination: dst }),
  }, { destination: dst, source: src });
}

/** An ICMP message from the guest. */
export function guestIcmp(dst: number, icmp: Icmpv4Repr): Uint8Array {
  return guestIpFrame({
    protocol: IpProtocol.ICMP,
    length: Icmpv4Repr.bufferLen(icmp),
    fill: (b) => Icmpv4Repr.emit(icmp, Icmpv4Packet.newUnchecked(b)),
  }, { destination: dst });
}

/** A frame the stack sent, parsed down to the layer that matters. */
export type Parsed =
  | { kind: "arp"; frame: Uint8Array }
  | { kind: "tcp"; ip: Ipv4Repr; tcp: TcpRepr }
  | { kind: "udp"; ip: Ipv4Repr; udp: UdpRepr }
  | { kind: "icmp"; ip: Ipv4Repr; icmp: Icmpv4Repr };

/** Parses a frame the stack emitted (checksums verified: the stack must send valid ones). */
export function parseOutput(frame: Uint8Array): Parsed {
  const eth = EthernetFrame.newChecked(frame);
  if (eth.etherType === EtherType.ARP) return { kind: "arp", frame };
  const p = Ipv4Packet.newChecked(eth.payload);
  const ip = Ipv4Repr.parse(p);
  const ctx = { source: ip.source, destination: ip.destination };
  switch (ip.protocol) {
    case IpProtocol.TCP:
      return { kind: "tcp", ip, tcp: TcpRepr.parse(TcpPacket.newChecked(p.payload), ctx) };
    case IpProtocol.UDP:
      return { kind: "udp", ip, udp: UdpRepr.parse(UdpPacket.newChecked(p.payload), ctx) };
    case IpProtocol.ICMP:
      return { kind: "icmp", ip, icmp: Icmpv4Repr.parse(Icmpv4Packet.newChecked(p.payload)) };
  }
  throw new Error(`unexpected protocol ${ip.protocol}`);
}

/** Everything the stack emits at `now`, parsed. */
export function drain(stack: NetworkStack, now: number): Parsed[] {
  const out: Parsed[] = [];
  stack.dispatch(now, (f) => {
    out.push(parseOutput(f.slice()));
    return true;
  });
  return out;
}

/** A small seeded PRNG (mulberry32) for reproducible random tests. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
