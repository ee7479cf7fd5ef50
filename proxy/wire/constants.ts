/**
 * Protocol numbers used by the stack, in one place, each with a name lookup for logs.
 *
 * @module
 */

/** EtherType values (IEEE 802.3). */
export const EtherType = { IPV4: 0x0800, ARP: 0x0806, IPV6: 0x86dd } as const;

/** IPv4 protocol numbers (IANA). */
export const IpProtocol = { ICMP: 1, TCP: 6, UDP: 17 } as const;

/** ARP operations (RFC 826). */
export const ArpOperation = { REQUEST: 1, REPLY: 2 } as const;

/** ICMPv4 message types (RFC 792) the stack sends or answers. */
export const IcmpType = { ECHO_REPLY: 0, DEST_UNREACHABLE: 3, ECHO_REQUEST: 8 } as const;

/** ICMPv4 destination-unreachable codes (RFC 792, RFC 1122). */
export const IcmpUnreachableCode = {
  NET: 0,
  HOST: 1,
  PROTOCOL: 2,
  PORT: 3,
  ADMIN_PROHIBITED: 13,
} as const;

/** TCP header flag bits (RFC 793, RFC 3168). */
export const TcpFlag = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/** TCP option kinds (RFC 793, RFC 7323, RFC 2018). */
export const TcpOptionKind = {
  END: 0,
  NOP: 1,
  MSS: 2,
  WINDOW_SCALE: 3,
  SACK_PERMITTED: 4,
  SACK: 5,
  TIMESTAMPS: 8,
} as const;

function lookup(table: Record<string, number>, value: number): string {
  for (const [name, v] of Object.entries(table)) if (v === value) return name;
  return `0x${value.toString(16)}`;
}

/** Name of an EtherType for logs ("IPV4", or hex when unknown). */
export function etherTypeName(value: number): string {
  return lookup(EtherType, value);
}

/** Name of an IP protocol number for logs ("TCP", or hex when unknown). */
export function ipProtocolName(value: number): string {
  return lookup(IpProtocol, value);
}

/** Name of an ICMP type for logs. */
export function icmpTypeName(value: number): string {
  return lookup(IcmpType, value);
}

/** TCP flags as text, e.g. "SYN|ACK". */
export function tcpFlagNames(flags: number): string {
  const names = Object.entries(TcpFlag).filter(([, bit]) => flags & bit).map(([name]) => name);
  return names.length > 0 ? names.join("|") : "none";
}
