/**
 * The network stack the guest's NIC talks to, sans-I/O. Frames go in with `receiveFrame(frame,
 * now)`, frames come out of `dispatch(now, emit)`, `pollAt()` says when to call again (a soft
 * deadline), and `nextEvent()` tells the I/O layer about connections (new, readable, writable,
 * closed) and DNS lookups it must answer. Time is always an argument.
 *
 * What it answers itself: ARP for every address of the subnet but the guest's, DHCP, ICMP echo
 * to the gateway and DNS addresses, DNS on port 53 of any address (UDP and TCP), ICMP
 * port-unreachable for any other UDP, RST for segments of no connection.
 *
 * Every count is capped (`StackLimits`) and every malformed or unwanted frame is counted in
 * `counters`, never thrown.
 *
 * @module
 */

import { type MacAddress, macEquals, parseIpv4, parseMac, prefixMask } from "./wire/address.ts";
import { ArpPacket, ArpRepr } from "./wire/arp.ts";
import type { ChecksumMode } from "./wire/checksum.ts";
import {
  ArpOperation,
  EtherType,
  IcmpUnreachableCode,
  IpProtocol,
  TcpFlag,
} from "./wire/constants.ts";
import { WireError } from "./wire/error.ts";
import { ETHERNET_HEADER_LEN, EthernetFrame, EthernetRepr } from "./wire/ethernet.ts";
import { ICMP_QUOTE_LEN, Icmpv4Packet, Icmpv4Repr } from "./wire/icmpv4.ts";
import { DEFAULT_TTL, IPV4_HEADER_LEN, Ipv4Packet, Ipv4Repr } from "./wire/ipv4.ts";
import { segmentLen, TcpPacket, TcpRepr } from "./wire/tcp.ts";
import { seqAdd } from "./wire/seq.ts";
import { UdpPacket, UdpRepr } from "./wire/udp.ts";
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpServer, emitDhcp, parseDhcp } from "./dhcp.ts";
import { DNS_PORT, type DnsLookupResult, finishDnsLookup, handleDnsQuery } from "./dns/server.ts";
import type { DnsMessage } from "./dns/message.ts";
import {
  type CloseReason,
  type Endpoint,
  SegmentStatus,
  SocketEvent,
  TcpSocket,
} from "./tcp/socket.ts";

/** Hard caps. Each is a documented setting (docs/network.md). */
export interface StackLimits {
  /** TCP connections held at once, TIME-WAIT included. */
  maxConnections: number;
  /** Connections waiting for the I/O layer's accept/refuse. */
  maxPendingConnections: number;
  /** Receive buffer per connection (guest to host), bytes. */
  rxBufferBytes: number;
  /** Send buffer per connection (host to guest), bytes. */
  txBufferBytes: number;
  /** DNS lookups waiting for an answer. */
  maxPendingDnsLookups: number;
  /** Frames the stack generated itself (ARP, ICMP, DNS, DHCP, RST) waiting to go out. */
  maxControlFrames: number;
  /** Events waiting for the I/O layer. */
  maxEvents: number;
  /** A connection the I/O layer neither accepts nor refuses within this many ms is refused. */
  pendingTimeoutMs: number;
}

/** Defaults for `StackLimits`. */
export const DEFAULT_LIMITS: StackLimits = {
  maxConnections: 1024,
  maxPendingConnections: 256,
  rxBufferBytes: 256 * 1024,
  txBufferBytes: 256 * 1024,
  maxPendingDnsLookups: 256,
  maxControlFrames: 1024,
  maxEvents: 8192,
  pendingTimeoutMs: 30_000,
};

/** Addresses and settings of the virtual network. */
export interface StackConfig {
  /** The guest's address (DHCP hands it out). Default 10.0.2.15. */
  guestIp?: string;
  /** Gateway address. Default 10.0.2.2. */
  gatewayIp?: string;
  /** DNS server address. Default 10.0.2.3. */
  dnsIp?: string;
  /** Subnet prefix length. Default 24. */
  prefix?: number;
  /** The MAC of every address on our side. Default 52:55:0a:00:02:02. */
  gatewayMac?: string;
  /** Link MTU (IP packet size). Default 1500; up to 65520 with virtio-net host_mtu. */
  mtu?: number;
  /** DHCP lease, seconds. Default one day. */
  leaseSeconds?: number;
  /** Verify checksums (default) or not (fuzzing). */
  checksum?: ChecksumMode;
  /** TCP TIME-WAIT in ms. */
  timeWaitMs?: number;
  /** Source of initial sequence numbers (default: crypto random). */
  randomIss?: () => number;
  /** Caps (defaults in DEFAULT_LIMITS). */
  limits?: Partial<StackLimits>;
}

/** Something the I/O layer must act on. */
export type StackEvent =
  /** The guest sent a SYN: decide with `accept(id)` or `refuse(id)`. */
  | { type: "connect"; id: number; source: Endpoint; destination: Endpoint }
  /** Data or end of stream ready for `recv(id)`. */
  | { type: "readable"; id: number }
  /** `sendCapacity(id)` grew. */
  | { type: "writable"; id: number }
  /** The connection is gone; `unread` holds bytes the guest sent that were never read. */
  | { type: "closed"; id: number; reason: CloseReason; unread: Uint8Array }
  /** Answer with `answerDns(id, result)`. */
  | { type: "dns-lookup"; id: number; name: string }
  /** A cap was hit; `message` is one line for the user. */
  | { type: "limit"; message: string };

/** Counters of everything dropped, refused or sent. */
export interface StackCounters {
  /** Frames received from the guest. */
  framesIn: number;
  /** Frames sent to the guest. */
  framesOut: number;
  /** Frames failing a length or field check. */
  malformed: number;
  /** Frames with a bad IPv4, ICMP, UDP or TCP checksum. */
  badChecksum: number;
  /** Valid but unhandled (IPv6, fragments, other IP protocols, ICMP types). */
  unsupported: number;
  /** Source address not the guest's (spoofing, or traffic before DHCP). */
  wrongSource: number;
  /** Control frames dropped because the queue was full. */
  controlQueueFull: number;
  /** DNS lookups dropped because too many were waiting. */
  dnsPendingFull: number;
  /** Events dropped because the I/O layer did not drain them. */
  eventsDropped: number;
  /** DNS queries answered. */
  dnsQueries: number;
  /** ICMP port-unreachable sent for refused UDP. */
  udpRefused: number;
  /** RSTs sent to segments of no connection. */
  tcpResetsSent: number;
  /** Connections opened (SYN accepted into the table). */
  tcpConnections: number;
  /** SYNs refused by a cap. */
  tcpLimitRefused: number;
  /** Guest TCP misbehaviour (SegmentStatus bits other than OK). */
  tcpSegmentIssues: number;
  /** Internal errors caught while handling a frame (a bug if ever non-zero). */
  internalErrors: number;
}

interface Connection {
  id: number;
  key: string;
  socket: TcpSocket;
  pending: boolean;
  /** When a pending connection is refused if still undecided. */
  pendingDeadline: number;
  /** Internal DNS-over-TCP service instead of a host connection. */
  dns: { inbox: Uint8Array } | undefined;
}

type DnsReplyTarget =
  | { kind: "udp"; from: number; to: Endpoint }
  | { kind: "tcp"; connId: number };

/** Bytes of one DNS-over-TCP message we accept, length prefix included. */
const DNS_TCP_MAX_MESSAGE = 2 + 4096;
/** Frames are carved from slabs of this size (one allocation for hundreds of frames). */
const FRAME_SLAB_BYTES = 1024 * 1024;
/** A cap message is repeated at most this often (ms). */
const LIMIT_MESSAGE_INTERVAL = 1000;

function defaultIss(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/** The virtual network's stack for one guest. */
export class NetworkStack {
  /** The guest's address. */
  readonly guestIp: number;
  /** The gateway's address. */
  readonly gatewayIp: number;
  /** The DNS server's address. */
  readonly dnsIp: number;
  /** Subnet prefix length. */
  readonly prefix: number;
  /** MAC of every address on our side. */
  readonly gatewayMac: MacAddress;
  /** Link MTU. */
  readonly mtu: number;
  /** Caps in force. */
  readonly limits: StackLimits;
  /** Everything counted so far. */
  readonly counters: StackCounters = {
    framesIn: 0,
    framesOut: 0,
    malformed: 0,
    badChecksum: 0,
    unsupported: 0,
    wrongSource: 0,
    controlQueueFull: 0,
    dnsPendingFull: 0,
    eventsDropped: 0,
    dnsQueries: 0,
    udpRefused: 0,
    tcpResetsSent: 0,
    tcpConnections: 0,
    tcpLimitRefused: 0,
    tcpSegmentIssues: 0,
    internalErrors: 0,
  };
  /** Message of the last internal error (for bug reports). */
  lastInternalError: string | undefined;

  readonly #checksum: ChecksumMode;
  readonly #timeWaitMs: number | undefined;
  readonly #randomIss: () => number;
  readonly #dhcp: DhcpServer;
  #guestMac: MacAddress | undefined;
  readonly #byKey = new Map<string, Connection>();
  readonly #byId = new Map<number, Connection>();
  #nextId = 1;
  #pendingCount = 0;
  readonly #control: Uint8Array[] = [];
  #controlHead = 0;
  readonly #events: StackEvent[] = [];
  #eventsHead = 0;
  readonly #flagged = new Map<number, number>();
  readonly #dnsPending = new Map<number, { query: DnsMessage; target: DnsReplyTarget }>();
  #nextDnsId = 1;
  #lastLimitMessageAt = -Infinity;
  #slab = new Uint8Array(0);
  #slabPos = 0;

  /** A stack with the given addresses and caps. */
  constructor(config: StackConfig = {}) {
    this.guestIp = parseIpv4(config.guestIp ?? "10.0.2.15");
    this.gatewayIp = parseIpv4(config.gatewayIp ?? "10.0.2.2");
    this.dnsIp = parseIpv4(config.dnsIp ?? "10.0.2.3");
    this.prefix = config.prefix ?? 24;
    this.gatewayMac = parseMac(config.gatewayMac ?? "52:55:0a:00:02:02");
    this.mtu = config.mtu ?? 1500;
    if (!Number.isInteger(this.mtu) || this.mtu < 576 || this.mtu > 65520) {
      throw new RangeError(`Cannot use MTU ${config.mtu}: expected 576 to 65520`);
    }
    this.limits = { ...DEFAULT_LIMITS, ...config.limits };
    this.#checksum = config.checksum ?? "verify";
    this.#timeWaitMs = config.timeWaitMs;
    this.#randomIss = config.randomIss ?? defaultIss;
    this.#dhcp = new DhcpServer({
      serverIp: this.gatewayIp,
      clientIp: this.guestIp,
      prefix: this.prefix,
      router: this.gatewayIp,
      dns: [this.dnsIp],
      leaseSeconds: config.leaseSeconds ?? 86400,
      mtu: this.mtu,
    });
  }

  /** Connections in the table. */
  get connectionCount(): number {
    return this.#byId.size;
  }
  /** Connections waiting for accept/refuse. */
  get pendingConnectionCount(): number {
    return this.#pendingCount;
  }
  /** Control frames waiting to go out. */
  get controlQueueLength(): number {
    return this.#control.length - this.#controlHead;
  }
  /** Events waiting for the I/O layer. */
  get eventQueueLength(): number {
    return this.#events.length - this.#eventsHead;
  }
  /** DNS lookups waiting for `answerDns`. */
  get pendingDnsCount(): number {
    return this.#dnsPending.size;
  }
  /** Buffer memory held by all connections. */
  get allocatedBytes(): number {
    let n = 0;
    for (const c of this.#byId.values()) n += c.socket.allocatedBytes;
    return n;
  }

  // ---------------------------------------------------------------------------------------
  // Input

  /** Handles one frame from the guest. Never throws; problems are counted. */
  receiveFrame(frame: Uint8Array, now: number): void {
    this.counters.framesIn++;
    try {
      const eth = EthernetFrame.newChecked(frame);
      const type = eth.etherType;
      if (type === EtherType.ARP) this.#receiveArp(eth);
      else if (type === EtherType.IPV4) this.#receiveIpv4(eth, now);
      else this.counters.unsupported++;
    } catch (e) {
      if (e instanceof WireError) {
        if (e.code === "checksum") this.counters.badChecksum++;
        else if (e.code === "unsupported") this.counters.unsupported++;
        else this.counters.malformed++;
      } else {
        this.counters.internalErrors++;
        this.lastInternalError = e instanceof Error ? e.stack ?? e.message : String(e);
      }
    }
  }

  #learnGuestMac(frame: EthernetFrame): void {
    // Compared in place: copying the address for every frame showed up in profiles.
    const b = frame.buffer;
    const known = this.#guestMac;
    if (known !== undefined && macEquals(known, b.subarray(6, 12))) return;
    if ((b[6]! & 1) === 0) this.#guestMac = b.slice(6, 12);
  }

  #inSubnet(addr: number): boolean {
    const mask = prefixMask(this.prefix);
    return ((addr & mask) >>> 0) === ((this.guestIp & mask) >>> 0);
  }

  #receiveArp(eth: EthernetFrame): void {
    const arp = ArpRepr.parse(ArpPacket.newChecked(eth.payload));
    if (arp.operation !== ArpOperation.REQUEST) return;
    if (arp.senderIp !== this.guestIp) {
      // Probes (sender 0.0.0.0) and foreign senders get no answer.
      this.counters.wrongSource++;
      return;
    }
    if ((arp.senderMac[0]! & 1) === 0) this.#guestMac = arp.senderMac;
    // Answer for every other address of the subnet, so connections to them fail fast (RST)
    // instead of waiting for ARP to time out.
    if (!this.#inSubnet(arp.targetIp) || arp.targetIp === this.guestIp) return;
    const reply: ArpRepr = {
      operation: ArpOperation.REPLY,
      senderMac: this.gatewayMac,
      senderIp: arp.targetIp,
      targetMac: arp.senderMac,
      targetIp: arp.senderIp,
    };
    const out = new Uint8Array(ETHERNET_HEADER_LEN + ArpRepr.bufferLen());
    const f = EthernetFrame.newUnchecked(out);
    EthernetRepr.emit({
      source: this.gatewayMac,
      destination: arp.senderMac,
      etherType: EtherType.ARP,
    }, f);
    ArpRepr.emit(reply, ArpPacket.newUnchecked(f.payload));
    this.#queueControl(out);
  }

  #receiveIpv4(eth: EthernetFrame, now: number): void {
    const packet = Ipv4Packet.newChecked(eth.payload);
    const ip = Ipv4Repr.parse(packet, this.#checksum);
    const payload = packet.payload;
    if (ip.source !== this.guestIp) {
      // Before DHCP completes the guest speaks from 0.0.0.0: only DHCP is accepted then.
      if (ip.source === 0 && ip.protocol === IpProtocol.UDP) {
        const udp = UdpRepr.parse(UdpPacket.newChecked(payload), {
          source: ip.source,
          destination: ip.destination,
          checksum: this.#checksum,
        });
        if (udp.destinationPort === DHCP_SERVER_PORT) {
          this.#learnGuestMac(eth);
          this.#receiveDhcp(udp);
          return;
        }
      }
      this.counters.wrongSource++;
      return;
    }
    this.#learnGuestMac(eth);
    switch (ip.protocol) {
      case IpProtocol.TCP: {
        const tcp = TcpRepr.parse(TcpPacket.newChecked(payload), {
          source: ip.source,
          destination: ip.destination,
          checksum: this.#checksum,
        });
        this.#receiveTcp(ip, tcp, now);
        return;
      }
      case IpProtocol.UDP: {
        const udp = UdpRepr.parse(UdpPacket.newChecked(payload), {
          source: ip.source,
          destination: ip.destination,
          checksum: this.#checksum,
        });
        this.#receiveUdp(packet, ip, udp);
        return;
      }
      case IpProtocol.ICMP: {
        const icmp = Icmpv4Repr.parse(Icmpv4Packet.newChecked(payload), this.#checksum);
        if (
          icmp.kind === "echo-request" &&
          (ip.destination === this.gatewayIp || ip.destination === this.dnsIp)
        ) {
          const reply: Icmpv4Repr = { ...icmp, kind: "echo-reply" };
          const len = Icmpv4Repr.bufferLen(reply);
          this.#queueControl(this.#ipFrame(ip.destination, IpProtocol.ICMP, len, (b) => {
            Icmpv4Repr.emit(reply, Icmpv4Packet.newUnchecked(b));
          }));
        } else {
          this.counters.unsupported++;
        }
        return;
      }
      default:
        this.counters.unsupported++;
    }
  }

  #receiveDhcp(udp: UdpRepr): void {
    const reply = this.#dhcp.handle(parseDhcp(udp.payload));
    if (!reply) return;
    const bytes = emitDhcp(reply);
    const repr: UdpRepr = {
      sourcePort: DHCP_SERVER_PORT,
      destinationPort: DHCP_CLIENT_PORT,
      payload: bytes,
    };
    // Broadcast: the client has no address yet (RFC 2131 4.1).
    const frame = this.#ipFrame(this.gatewayIp, IpProtocol.UDP, UdpRepr.bufferLen(repr), (b) => {
      UdpRepr.emit(repr, UdpPacket.newUnchecked(b), {
        source: this.gatewayIp,
        destination: 0xffffffff,
      });
    }, 0xffffffff);
    this.#queueControl(frame);
  }

  #receiveUdp(packet: Ipv4Packet, ip: Ipv4Repr, udp: UdpRepr): void {
    if (udp.destinationPort === DHCP_SERVER_PORT) {
      this.#receiveDhcp(udp);
      return;
    }
    if (udp.destinationPort === DNS_PORT) {
      this.counters.dnsQueries++;
      this.#handleDnsBytes(udp.payload, {
        kind: "udp",
        from: ip.destination,
        to: { address: ip.source, port: udp.sourcePort },
      });
      return;
    }
    // RFC 1122 3.2.2: no ICMP error about broadcast or multicast datagrams.
    const d = ip.destination;
    const mask = prefixMask(this.prefix);
    if (d === 0xffffffff || (d >>> 28) === 0xe || ((d | mask) >>> 0) === 0xffffffff) return;
    // Refused UDP: port unreachable at once, so tools fail fast instead of timing out.
    this.counters.udpRefused++;
    const quote = packet.buffer.subarray(
      0,
      Math.min(packet.totalLen, packet.headerLen + ICMP_QUOTE_LEN),
    );
    const icmp: Icmpv4Repr = {
      kind: "dest-unreachable",
      code: IcmpUnreachableCode.PORT,
      data: quote.slice(),
    };
    this.#queueControl(
      this.#ipFrame(ip.destination, IpProtocol.ICMP, Icmpv4Repr.bufferLen(icmp), (b) => {
        Icmpv4Repr.emit(icmp, Icmpv4Packet.newUnchecked(b));
      }),
    );
  }

  #handleDnsBytes(bytes: Uint8Array, target: DnsReplyTarget): void {
    const outcome = handleDnsQuery(bytes);
    if (outcome.kind === "drop") {
      this.counters.malformed++;
      return;
    }
    if (outcome.kind === "reply") {
      this.#sendDnsReply(target, outcome.bytes);
      return;
    }
    if (this.#dnsPending.size >= this.limits.maxPendingDnsLookups) {
      // The guest's resolver retries; refusing new lookups keeps memory bounded.
      this.counters.dnsPendingFull++;
      return;
    }
    const id = this.#nextDnsId++;
    this.#dnsPending.set(id, { query: outcome.query, target });
    this.#pushEvent({ type: "dns-lookup", id, name: outcome.name });
  }

  #sendDnsReply(target: DnsReplyTarget, bytes: Uint8Array): void {
    if (target.kind === "tcp") {
      const conn = this.#byId.get(target.connId);
      if (!conn) return;
      const framed = new Uint8Array(2 + bytes.length);
      new DataView(framed.buffer).setUint16(0, bytes.length);
      framed.set(bytes, 2);
      if (conn.socket.sendCapacity >= framed.length) conn.socket.send(framed);
      else conn.socket.abort(); // a client not reading its answers
      return;
    }
    const repr: UdpRepr = { sourcePort: DNS_PORT, destinationPort: target.to.port, payload: bytes };
    this.#queueControl(this.#ipFrame(target.from, IpProtocol.UDP, UdpRepr.bufferLen(repr), (b) => {
      UdpRepr.emit(repr, UdpPacket.newUnchecked(b), {
        source: target.from,
        destination: this.guestIp,
      });
    }));
  }

  #receiveTcp(ip: Ipv4Repr, seg: TcpRepr, now: number): void {
    const key = `${seg.sourcePort}:${ip.destination}:${seg.destinationPort}`;
    let conn = this.#byKey.get(key);
    const isSyn = (seg.flags & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) === TcpFlag.SYN;
    if (conn && isSyn && conn.socket.state === "TIME-WAIT") {
      // RFC 1122 4.2.2.13: a new SYN may reopen a connection in TIME-WAIT.
      this.#remove(conn);
      conn = undefined;
    }
    if (conn) {
      const status = conn.socket.process(now, seg);
      if (status !== SegmentStatus.OK) this.counters.tcpSegmentIssues++;
      this.#afterSocketChange(conn);
      return;
    }
    if (seg.flags & TcpFlag.RST) return; // RFC 793: never answer a RST
    if (!isSyn) {
      this.#sendReset(ip, seg);
      return;
    }
    if (
      this.#pendingCount >= this.limits.maxPendingConnections ||
      (this.#byId.size >= this.limits.maxConnections && !this.#evictTimeWait())
    ) {
      this.counters.tcpLimitRefused++;
      this.#limitMessage(
        now,
        this.#byId.size >= this.limits.maxConnections
          ? `Cannot open more guest TCP connections: ${this.#byId.size} open ` +
            `(limit ${this.limits.maxConnections}); new ones are refused until some close`
          : `Cannot open more guest TCP connections: ${this.#pendingCount} still connecting ` +
            `(limit ${this.limits.maxPendingConnections}); new ones are refused until those finish`,
      );
      this.#sendReset(ip, seg);
      return;
    }
    const socket = TcpSocket.fromSyn(seg, {
      local: { address: ip.destination, port: seg.destinationPort },
      remote: { address: ip.source, port: seg.sourcePort },
      iss: this.#randomIss(),
      mss: this.mtu - 40,
      rxCapacity: this.limits.rxBufferBytes,
      txCapacity: this.limits.txBufferBytes,
      ...(this.#timeWaitMs !== undefined ? { timeWaitMs: this.#timeWaitMs } : {}),
    });
    const id = this.#nextId++;
    const isDns = seg.destinationPort === DNS_PORT;
    conn = {
      id,
      key,
      socket,
      pending: !isDns,
      pendingDeadline: now + this.limits.pendingTimeoutMs,
      dns: isDns ? { inbox: new Uint8Array(0) } : undefined,
    };
    this.#byKey.set(key, conn);
    this.#byId.set(id, conn);
    this.counters.tcpConnections++;
    if (isDns) {
      socket.accept();
    } else {
      this.#pendingCount++;
      this.#pushEvent({ type: "connect", id, source: socket.remote, destination: socket.local });
    }
  }

  #evictTimeWait(): boolean {
    for (const c of this.#byId.values()) {
      if (c.socket.state === "TIME-WAIT") {
        this.#remove(c);
        return true;
      }
    }
    return false;
  }

  #sendReset(ip: Ipv4Repr, seg: TcpRepr): void {
    // RFC 793 "Reset Generation" for a segment of no connection.
    const hasAck = (seg.flags & TcpFlag.ACK) !== 0;
    const rst: TcpRepr = {
      sourcePort: seg.destinationPort,
      destinationPort: seg.sourcePort,
      sequence: hasAck ? seg.acknowledgment : 0,
      acknowledgment: hasAck ? 0 : seqAdd(seg.sequence, segmentLen(seg)),
      flags: hasAck ? TcpFlag.RST : TcpFlag.RST | TcpFlag.ACK,
      window: 0,
      options: {},
      payload: new Uint8Array(0),
    };
    this.counters.tcpResetsSent++;
    this.#queueControl(this.#tcpFrame(ip.destination, rst));
  }

  #limitMessage(now: number, message: string): void {
    if (now - this.#lastLimitMessageAt < LIMIT_MESSAGE_INTERVAL) return;
    this.#lastLimitMessageAt = now;
    this.#pushEvent({ type: "limit", message });
  }

  // ---------------------------------------------------------------------------------------
  // The I/O layer's side

  /** Accepts a pending connection: SYN-ACK goes out at the next dispatch. */
  accept(id: number): void {
    const c = this.#byId.get(id);
    if (!c || !c.pending) return;
    c.pending = false;
    this.#pendingCount--;
    c.socket.accept();
  }

  /** Refuses a pending connection: RST goes out at the next dispatch. */
  refuse(id: number): void {
    const c = this.#byId.get(id);
    if (!c || !c.pending) return;
    c.pending = false;
    this.#pendingCount--;
    c.socket.refuse();
  }

  /** Queues bytes for the guest; returns how many fit. */
  send(id: number, data: Uint8Array): number {
    return this.#byId.get(id)?.socket.send(data) ?? 0;
  }

  /** Bytes `send(id)` would take now. */
  sendCapacity(id: number): number {
    return this.#byId.get(id)?.socket.sendCapacity ?? 0;
  }

  /** Bytes waiting to be acknowledged by the guest (host data in flight). */
  sendQueued(id: number): number {
    return this.#byId.get(id)?.socket.sendQueued ?? 0;
  }

  /** Up to `max` bytes from the guest; `null` at end of stream or for an unknown id. */
  recv(id: number, max: number): Uint8Array | null {
    const c = this.#byId.get(id);
    if (!c) return null;
    const out = c.socket.recv(max);
    if (out.length === 0 && (c.socket.recvFinished || c.socket.state === "CLOSED")) return null;
    return out;
  }

  /** The host side will send nothing more: FIN after queued data. */
  close(id: number): void {
    this.#byId.get(id)?.socket.close();
  }

  /** Resets the connection (host socket failed). */
  abort(id: number): void {
    this.#byId.get(id)?.socket.abort();
  }

  /** Answers a `dns-lookup` event. */
  answerDns(id: number, result: DnsLookupResult): void {
    const p = this.#dnsPending.get(id);
    if (!p) return;
    this.#dnsPending.delete(id);
    this.#sendDnsReply(p.target, finishDnsLookup(p.query, result));
    if (p.target.kind === "tcp") {
      const c = this.#byId.get(p.target.connId);
      if (c) this.#afterSocketChange(c);
    }
  }

  /** The next event, or undefined. */
  nextEvent(): StackEvent | undefined {
    while (this.#eventsHead < this.#events.length) {
      const e = this.#events[this.#eventsHead++]!;
      if (this.#eventsHead > 1024 && this.#eventsHead * 2 > this.#events.length) {
        this.#events.splice(0, this.#eventsHead);
        this.#eventsHead = 0;
      }
      if (e.type === "readable" || e.type === "writable") {
        // Coalesced: the flag map holds what is still due for this connection.
        const bit = e.type === "readable" ? SocketEvent.READABLE : SocketEvent.WRITABLE;
        const flags = this.#flagged.get(e.id) ?? 0;
        if (!(flags & bit)) continue;
        const rest = flags & ~bit;
        if (rest) this.#flagged.set(e.id, rest);
        else this.#flagged.delete(e.id);
      }
      return e;
    }
    return undefined;
  }

  // ---------------------------------------------------------------------------------------
  // Output

  /**
   * Hands every due frame to `emit`, which must copy or keep it; when `emit` returns false the
   * link is full and dispatch stops (call again when it drains).
   */
  dispatch(now: number, emit: (frame: Uint8Array) => boolean): void {
    while (this.#controlHead < this.#control.length) {
      if (!emit(this.#control[this.#controlHead]!)) return;
      this.#control[this.#controlHead++] = undefined as unknown as Uint8Array;
      this.counters.framesOut++;
    }
    this.#control.length = 0;
    this.#controlHead = 0;
    let full = false;
    for (const c of [...this.#byId.values()]) {
      if (c.pending && now >= c.pendingDeadline) this.refuse(c.id);
      if (!full) {
        const at = c.socket.pollAt();
        if (at !== undefined && at <= now) {
          c.socket.dispatch(now, (seg) => {
            const ok = emit(this.#tcpFrame(c.socket.local.address, seg));
            if (ok) this.counters.framesOut++;
            else full = true;
            return ok;
          });
        }
      }
      this.#afterSocketChange(c);
    }
  }

  /** When `dispatch` is next due (a soft deadline, same clock as `now`), or undefined. */
  pollAt(): number | undefined {
    if (this.controlQueueLength > 0) return 0;
    let at: number | undefined;
    for (const c of this.#byId.values()) {
      const t = c.pending ? c.pendingDeadline : c.socket.pollAt();
      if (t !== undefined && (at === undefined || t < at)) at = t;
    }
    return at;
  }

  #afterSocketChange(c: Connection): void {
    const s = c.socket;
    const ev = s.takeEvents();
    if (c.dns) {
      if (ev & SocketEvent.READABLE) this.#serviceDns(c);
    } else if (ev) {
      const before = this.#flagged.get(c.id) ?? 0;
      const add = ev & ~before;
      if (add) {
        this.#flagged.set(c.id, before | ev);
        if (add & SocketEvent.READABLE) this.#pushEvent({ type: "readable", id: c.id });
        if (add & SocketEvent.WRITABLE) this.#pushEvent({ type: "writable", id: c.id });
      }
    }
    if (s.state === "CLOSED" && s.pollAt() === undefined) this.#remove(c);
    else if (s.state === "TIME-WAIT") s.releaseBuffers();
  }

  #serviceDns(c: Connection): void {
    const dns = c.dns!;
    const data = c.socket.recv(DNS_TCP_MAX_MESSAGE);
    if (data.length > 0) {
      const merged = new Uint8Array(dns.inbox.length + data.length);
      merged.set(dns.inbox);
      merged.set(data, dns.inbox.length);
      dns.inbox = merged;
    }
    for (;;) {
      if (dns.inbox.length < 2) break;
      const len = (dns.inbox[0]! << 8) | dns.inbox[1]!;
      if (2 + len > DNS_TCP_MAX_MESSAGE) {
        this.counters.malformed++;
        c.socket.abort();
        return;
      }
      if (dns.inbox.length < 2 + len) break;
      const msg = dns.inbox.slice(2, 2 + len);
      dns.inbox = dns.inbox.slice(2 + len);
      this.counters.dnsQueries++;
      this.#handleDnsBytes(msg, { kind: "tcp", connId: c.id });
    }
    if (dns.inbox.length >= DNS_TCP_MAX_MESSAGE) c.socket.abort();
    else if (c.socket.recvFinished) c.socket.close();
  }

  #remove(c: Connection): void {
    this.#byKey.delete(c.key);
    this.#byId.delete(c.id);
    this.#flagged.delete(c.id);
    if (c.pending) this.#pendingCount--;
    if (!c.dns) {
      const unread = c.socket.recvAvailable > 0
        ? c.socket.recv(c.socket.recvAvailable)
        : new Uint8Array(0);
      this.#pushEvent({
        type: "closed",
        id: c.id,
        reason: c.socket.closeReason ?? "closed",
        unread,
      });
    }
  }

  #pushEvent(e: StackEvent): void {
    if (this.eventQueueLength >= this.limits.maxEvents) {
      this.counters.eventsDropped++;
      return;
    }
    this.#events.push(e);
  }

  #queueControl(frame: Uint8Array): void {
    if (this.controlQueueLength >= this.limits.maxControlFrames) {
      this.counters.controlQueueFull++;
      return;
    }
    this.#control.push(frame);
  }

  #ipFrame(
    source: number,
    protocol: number,
    l4Len: number,
    fill: (l4: Uint8Array) => void,
    destination = this.guestIp,
  ): Uint8Array {
    const out = this.#allocFrame(ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + l4Len);
    const eth = EthernetFrame.newUnchecked(out);
    const dstMac = destination === 0xffffffff || !this.#guestMac
      ? new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
      : this.#guestMac;
    EthernetRepr.emit(
      { source: this.gatewayMac, destination: dstMac, etherType: EtherType.IPV4 },
      eth,
    );
    const ipBuf = out.subarray(ETHERNET_HEADER_LEN);
    fill(ipBuf.subarray(IPV4_HEADER_LEN));
    Ipv4Repr.emit(
      { source, destination, protocol, payloadLen: l4Len, ttl: DEFAULT_TTL },
      Ipv4Packet.newUnchecked(ipBuf),
    );
    return out;
  }

  /**
   * A fresh frame buffer, bump-allocated from a slab: allocating an ArrayBuffer per frame was a
   * sixth of the send path's time. Slab memory is never reused (a frame may still sit in a link
   * queue), so every frame starts zeroed; a slab is freed when its last frame is.
   */
  #allocFrame(len: number): Uint8Array {
    if (len > FRAME_SLAB_BYTES / 8) return new Uint8Array(len);
    if (this.#slabPos + len > this.#slab.length) {
      this.#slab = new Uint8Array(FRAME_SLAB_BYTES);
      this.#slabPos = 0;
    }
    const out = this.#slab.subarray(this.#slabPos, this.#slabPos + len);
    this.#slabPos += (len + 7) & ~7;
    return out;
  }

  #tcpFrame(source: number, seg: TcpRepr): Uint8Array {
    return this.#ipFrame(source, IpProtocol.TCP, TcpRepr.bufferLen(seg), (b) => {
      TcpRepr.emit(seg, TcpPacket.newUnchecked(b), { source, destination: this.guestIp });
    });
  }
}
