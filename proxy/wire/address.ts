/**
 * MAC and IPv4 addresses. IPv4 addresses are unsigned 32-bit numbers (cheap map keys and range
 * checks); MAC addresses are 6-byte arrays.
 *
 * @module
 */

/** A 6-byte Ethernet address. */
export type MacAddress = Uint8Array;

/** The broadcast MAC address ff:ff:ff:ff:ff:ff. */
export const BROADCAST_MAC: MacAddress = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** Formats a MAC address as "02:00:00:00:00:01". */
export function macToString(mac: MacAddress): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** Parses "02:00:00:00:00:01". Throws SyntaxError on anything else. */
export function parseMac(text: string): MacAddress {
  const parts = text.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new SyntaxError(`Cannot parse MAC address "${text}": expected six hex pairs`);
  }
  return new Uint8Array(parts.map((p) => parseInt(p, 16)));
}

/** Two MAC addresses are equal. */
export function macEquals(a: MacAddress, b: MacAddress): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Formats an IPv4 address number as dotted quad. */
export function ipv4ToString(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

/** Parses a dotted-quad IPv4 address. Throws SyntaxError on anything else. */
export function parseIpv4(text: string): number {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || +p > 255)) {
    throw new SyntaxError(`Cannot parse IPv4 address "${text}": expected four numbers 0-255`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0) >>> 0;
}

/** True when `text` is a dotted-quad IPv4 address. */
export function isIpv4(text: string): boolean {
  try {
    parseIpv4(text);
    return true;
  } catch {
    return false;
  }
}

/** An IPv4 prefix, e.g. 10.0.0.0/8. */
export interface Ipv4Cidr {
  /** Network address. */
  readonly address: number;
  /** Prefix length, 0 to 32. */
  readonly prefix: number;
}

/** Parses "10.0.0.0/8". */
export function parseCidr(text: string): Ipv4Cidr {
  const [addr, len, extra] = text.split("/");
  const prefix = Number(len);
  if (
    addr === undefined || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 ||
    prefix > 32
  ) {
    throw new SyntaxError(`Cannot parse IPv4 prefix "${text}": expected ADDRESS/0-32`);
  }
  return { address: parseIpv4(addr), prefix };
}

/** Netmask of a prefix length as a number (24 → 255.255.255.0). */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** `addr` lies inside `cidr`. */
export function cidrContains(cidr: Ipv4Cidr, addr: number): boolean {
  const mask = prefixMask(cidr.prefix);
  return ((addr & mask) >>> 0) === ((cidr.address & mask) >>> 0);
}
