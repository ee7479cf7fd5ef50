/**
 * A DHCP server for one client (RFC 2131, options RFC 2132): DISCOVER → OFFER, REQUEST → ACK or
 * NAK, INFORM → ACK. There is exactly one guest on the link, so the "pool" is one address.
 * Sans-I/O: `DhcpServer.handle` maps one parsed request to one reply.
 *
 * @module
 */

import { WireError } from "./wire/error.ts";
import { prefixMask } from "./wire/address.ts";

/** Field offsets of a BOOTP message (RFC 2131 figure 1). */
const field = {
  OP: 0,
  HTYPE: 1,
  HLEN: 2,
  HOPS: 3,
  XID: 4,
  SECS: 8,
  FLAGS: 10,
  CIADDR: 12,
  YIADDR: 16,
  SIADDR: 20,
  GIADDR: 24,
  CHADDR: 28,
  SNAME: 44,
  FILE: 108,
  MAGIC: 236,
  OPTIONS: 240,
} as const;

/** RFC 2131 3: the magic cookie 99.130.83.99 that starts the options. */
const MAGIC_COOKIE = 0x63825363;
/** BOOTP replies are padded to this length (RFC 1542 2.1: some clients drop shorter ones). */
const MIN_MESSAGE_LEN = 300;
/** UDP port of the server. */
export const DHCP_SERVER_PORT = 67;
/** UDP port of the client. */
export const DHCP_CLIENT_PORT = 68;

/** DHCP option codes used here (RFC 2132). */
export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  BROADCAST: 28,
  MTU: 26,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  RENEWAL_T1: 58,
  REBINDING_T2: 59,
  END: 255,
} as const;

/** DHCP message types (RFC 2132 9.6). */
export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

/** A parsed DHCP message (the fields this server reads or writes). */
export interface DhcpMessage {
  /** 1 request, 2 reply. */
  op: number;
  /** Transaction id chosen by the client. */
  xid: number;
  /** Flags (bit 15: broadcast). */
  flags: number;
  /** Client's current address. */
  ciaddr: number;
  /** "Your" address (offered). */
  yiaddr: number;
  /** Client hardware address (6 bytes for Ethernet). */
  chaddr: Uint8Array;
  /** DhcpMessageType. */
  messageType: number;
  /** Option 50. */
  requestedIp?: number;
  /** Option 54. */
  serverId?: number;
  /** Options to emit in a reply, code → value bytes (in insertion order). */
  options: Map<number, Uint8Array>;
}

/** Parses a BOOTP/DHCP message from a UDP payload (untrusted). */
export function parseDhcp(bytes: Uint8Array): DhcpMessage {
  if (bytes.length < field.OPTIONS) {
    throw new WireError(
      "truncated",
      "dhcp",
      "options",
      `needs ${field.OPTIONS} bytes, got ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(field.MAGIC) !== MAGIC_COOKIE) {
    throw new WireError("malformed", "dhcp", "magic", "is not the DHCP magic cookie");
  }
  const op = bytes[field.OP]!;
  if (op !== 1 && op !== 2) throw new WireError("malformed", "dhcp", "op", `is ${op}`);
  const hlen = bytes[field.HLEN]!;
  if (bytes[field.HTYPE] !== 1 || hlen !== 6) {
    throw new WireError("unsupported", "dhcp", "htype", "is not Ethernet");
  }
  const msg: DhcpMessage = {
    op,
    xid: view.getUint32(field.XID),
    flags: view.getUint16(field.FLAGS),
    ciaddr: view.getUint32(field.CIADDR),
    yiaddr: view.getUint32(field.YIADDR),
    chaddr: bytes.slice(field.CHADDR, field.CHADDR + 6),
    messageType: 0,
    options: new Map(),
  };
  let i: number = field.OPTIONS;
  while (i < bytes.length) {
    const code = bytes[i]!;
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      i++;
      continue;
    }
    if (i + 1 >= bytes.length) {
      throw new WireError("malformed", "dhcp", "options", `option ${code} has no length byte`);
    }
    const len = bytes[i + 1]!;
    if (i + 2 + len > bytes.length) {
      throw new WireError("malformed", "dhcp", "options", `option ${code} runs past the end`);
    }
    const value = bytes.subarray(i + 2, i + 2 + len);
    const u32 = () => {
      if (len !== 4) {
        throw new WireError(
          "malformed",
          "dhcp",
          "options",
          `option ${code} has length ${len}, not 4`,
        );
      }
      return new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
    };
    if (code === DhcpOption.MESSAGE_TYPE) {
      if (len !== 1) {
        throw new WireError("malformed", "dhcp", "options", "message type length is not 1");
      }
      msg.messageType = value[0]!;
    } else if (code === DhcpOption.REQUESTED_IP) msg.requestedIp = u32();
    else if (code === DhcpOption.SERVER_ID) msg.serverId = u32();
    i += 2 + len;
  }
  if (msg.messageType === 0) {
    throw new WireError("malformed", "dhcp", "options", "has no message type (plain BOOTP)");
  }
  return msg;
}

/** Encodes a reply message. */
export function emitDhcp(msg: DhcpMessage): Uint8Array {
  let optLen = 3; // message type
  for (const v of msg.options.values()) optLen += 2 + v.length;
  const len = Math.max(MIN_MESSAGE_LEN, field.OPTIONS + optLen + 1);
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  out[field.OP] = msg.op;
  out[field.HTYPE] = 1;
  out[field.HLEN] = 6;
  view.setUint32(field.XID, msg.xid);
  view.setUint16(field.FLAGS, msg.flags);
  view.setUint32(field.CIADDR, msg.ciaddr);
  view.setUint32(field.YIADDR, msg.yiaddr);
  out.set(msg.chaddr.subarray(0, 16), field.CHADDR);
  view.setUint32(field.MAGIC, MAGIC_COOKIE);
  let i: number = field.OPTIONS;
  out[i++] = DhcpOption.MESSAGE_TYPE;
  out[i++] = 1;
  out[i++] = msg.messageType;
  for (const [code, v] of msg.options) {
    out[i++] = code;
    out[i++] = v.length;
    out.set(v, i);
    i += v.length;
  }
  out[i] = DhcpOption.END;
  return out;
}

/** Addresses and lease the server hands out. */
export interface DhcpConfig {
  /** Our address (server identifier). */
  serverIp: number;
  /** The one address offered to the guest. */
  clientIp: number;
  /** Subnet prefix length. */
  prefix: number;
  /** Default gateway. */
  router: number;
  /** DNS servers. */
  dns: number[];
  /** Lease in seconds. */
  leaseSeconds: number;
  /** Interface MTU (option 26). */
  mtu: number;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0);
  return b;
}

/** Answers DHCP requests for the single guest. */
export class DhcpServer {
  /** Addresses handed out. */
  readonly config: DhcpConfig;

  /** A server with fixed addresses. */
  constructor(config: DhcpConfig) {
    this.config = config;
  }

  /** The reply to `req`, or undefined when none is due (another server chosen, RELEASE). */
  handle(req: DhcpMessage): DhcpMessage | undefined {
    if (req.op !== 1) return undefined;
    const c = this.config;
    switch (req.messageType) {
      case DhcpMessageType.DISCOVER:
        return this.#reply(req, DhcpMessageType.OFFER, true);
      case DhcpMessageType.REQUEST: {
        // RFC 2131 4.3.2: a REQUEST naming another server means the client chose that one.
        if (req.serverId !== undefined && req.serverId !== c.serverIp) return undefined;
        const wanted = req.requestedIp ?? req.ciaddr;
        if (wanted !== c.clientIp) return this.#reply(req, DhcpMessageType.NAK, false);
        return this.#reply(req, DhcpMessageType.ACK, true);
      }
      case DhcpMessageType.INFORM:
        // RFC 2131 4.3.5: configuration only, no address and no lease.
        return { ...this.#reply(req, DhcpMessageType.ACK, true), yiaddr: 0 };
      default:
        return undefined;
    }
  }

  #reply(req: DhcpMessage, type: number, withConfig: boolean): DhcpMessage {
    const c = this.config;
    const options = new Map<number, Uint8Array>();
    options.set(DhcpOption.SERVER_ID, u32(c.serverIp));
    if (withConfig) {
      const mask = prefixMask(c.prefix);
      if (req.messageType !== DhcpMessageType.INFORM) {
        options.set(DhcpOption.LEASE_TIME, u32(c.leaseSeconds));
        options.set(DhcpOption.RENEWAL_T1, u32(Math.floor(c.leaseSeconds / 2)));
        options.set(DhcpOption.REBINDING_T2, u32(Math.floor(c.leaseSeconds * 7 / 8)));
      }
      options.set(DhcpOption.SUBNET_MASK, u32(mask));
      options.set(DhcpOption.ROUTER, u32(c.router));
      const dns = new Uint8Array(4 * c.dns.length);
      c.dns.forEach((d, i) => dns.set(u32(d), i * 4));
      options.set(DhcpOption.DNS, dns);
      options.set(DhcpOption.BROADCAST, u32((c.clientIp & mask) | ~mask));
      options.set(DhcpOption.MTU, new Uint8Array([c.mtu >> 8, c.mtu & 0xff]));
    }
    return {
      op: 2,
      xid: req.xid,
      flags: req.flags,
      ciaddr: req.messageType === DhcpMessageType.INFORM ? req.ciaddr : 0,
      yiaddr: withConfig ? c.clientIp : 0,
      chaddr: req.chaddr,
      messageType: type,
      options,
    };
  }
}
