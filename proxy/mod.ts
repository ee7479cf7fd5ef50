/**
 * `proxy/`: the guest's network for `--allow-net`. A user-space TCP/IPv4 stack fed with the
 * Ethernet frames of the VM's NIC, and a policy proxy that turns every allowed guest
 * connection into a host socket. No tap device, no root, no slirp.
 *
 * Layers (each sans-I/O except the last two):
 * - `wire/`: packet views and representations (Ethernet, ARP, IPv4, ICMPv4, UDP, TCP).
 * - `tcp/`: RFC 793 states, RFC 6298 RTO, the timer, the passive-open socket.
 * - `dhcp.ts`, `dns/`: DHCP and DNS servers for the guest.
 * - `stack.ts`: `NetworkStack`: `receiveFrame(frame, now)`, `dispatch(now, emit)`, `pollAt()`,
 *   `nextEvent()`, and the calls the I/O layer answers with (`accept`, `refuse`, `send`,
 *   `recv`, `close`, `abort`, `answerDns`).
 * - `policy.ts`, `name_map.ts`: who may resolve and connect where; names behind pool addresses.
 * - `link.ts`: frame transports (QEMU stream, datagram), `relay.ts`: the Deno I/O loop.
 * - `secret/`: `--secret`: the per-run CA, placeholders, TLS termination and HTTP substitution.
 *
 * Typical use (QEMU `-netdev stream,server=off,addr.type=unix,addr.path=SOCK`):
 *
 * ```ts ignore
 * const listener = Deno.listen({ transport: "unix", path: sock });
 * const conn = await listener.accept();
 * const relay = new Relay({
 *   link: new StreamLink(conn),
 *   policy: new NetworkPolicy({ allowHosts: ["pypi.org", "*.pythonhosted.org"] }),
 * });
 * await relay.run(); // until QEMU closes the socket
 * ```
 *
 * @module
 */

export {
  DEFAULT_LIMITS,
  NetworkStack,
  type StackConfig,
  type StackCounters,
  type StackEvent,
  type StackLimits,
} from "./stack.ts";
export {
  type ConnectionRecord,
  type Dialer,
  type DialTarget,
  hostResolver,
  type HostStream,
  Relay,
  type RelayOptions,
  type Resolver,
} from "./relay.ts";
export {
  type ConnectDecision,
  EXPOSE_HOST_NAME,
  type ExposedPort,
  HostPatternSet,
  NetworkPolicy,
  type NetworkPolicyOptions,
  parseHostPattern,
  type Verdict,
} from "./policy.ts";
export { DEFAULT_FAKE_POOL, FakeIpPool, type FakeIpPoolOptions } from "./name_map.ts";
export {
  bindDatagramSocket,
  connectDatagramSocket,
  DatagramLink,
  type FrameDirection,
  type FrameLink,
  LinkError,
  type LinkErrorCode,
  type LinkOptions,
  MAX_FRAME_LEN,
  StreamLink,
  TracingLink,
} from "./link.ts";
export { PcapWriter } from "./pcap.ts";
export { QueuedWriter } from "./link.ts";
export { type Ipv4Cidr, type MacAddress, parseIpv4 } from "./wire/address.ts";
export { TcpFlag } from "./wire/constants.ts";
export type { TcpRepr } from "./wire/tcp.ts";
export type { ChecksumMode } from "./wire/checksum.ts";
export type { CloseReason, Endpoint } from "./tcp/socket.ts";
export type { DnsLookupResult } from "./dns/server.ts";
export { buildDnsReply, DnsRcode, DnsType, parseDnsMessage } from "./dns/mod.ts";
export * from "./secret/mod.ts";
