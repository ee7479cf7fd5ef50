/**
 * NBD protocol constants, in one place, with name lookups for logs and errors.
 *
 * Every field on the wire is big-endian (network byte order). Values follow the NBD protocol
 * document (github.com/NetworkBlockDevice/nbd, doc/proto.md) and match nbdkit's
 * `common/protocol/nbd-protocol.h`. Log and error messages never print a bare number: they go
 * through {@linkcode optionName}, {@linkcode commandName}, {@linkcode errorName} and friends.
 *
 * @module
 */

/** Magic numbers (their ASCII meaning in the comment, where they have one). */
export const Magic = {
  /** 'NBDMAGIC': first 8 bytes the server sends. */
  NBDMAGIC: 0x4e42444d41474943n,
  /** 'IHAVEOPT': newstyle handshake; also the prefix of every client option. */
  IHAVEOPT: 0x49484156454f5054n,
  /** Prefix of every option reply in fixed newstyle. */
  OPTION_REPLY: 0x3e889045565a9n,
  /** Prefix of every transmission-phase request. */
  REQUEST: 0x25609513,
  /** Prefix of a simple reply. */
  SIMPLE_REPLY: 0x67446698,
  /** Prefix of a structured reply chunk. */
  STRUCTURED_REPLY: 0x668e33ef,
} as const;

/** Handshake flags the server sends (16 bits) after the two magics. */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags (32 bits) the client answers with. */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags (16 bits) describing the export. */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STAT_PAYLOAD: 1 << 12,
} as const;

/** Option codes a client sends during the handshake. */
export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Bit 31: every option reply type with it set is an error. */
export const OPTION_REPLY_ERROR_BIT = 0x80000000;

/** Option reply types. */
export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: OPTION_REPLY_ERROR_BIT + 1,
  ERR_POLICY: OPTION_REPLY_ERROR_BIT + 2,
  ERR_INVALID: OPTION_REPLY_ERROR_BIT + 3,
  ERR_PLATFORM: OPTION_REPLY_ERROR_BIT + 4,
  ERR_TLS_REQD: OPTION_REPLY_ERROR_BIT + 5,
  ERR_UNKNOWN: OPTION_REPLY_ERROR_BIT + 6,
  ERR_SHUTDOWN: OPTION_REPLY_ERROR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: OPTION_REPLY_ERROR_BIT + 8,
  ERR_TOO_BIG: OPTION_REPLY_ERROR_BIT + 9,
  ERR_EXT_HEADER_REQD: OPTION_REPLY_ERROR_BIT + 10,
} as const;

/** Information types inside NBD_OPT_INFO / NBD_OPT_GO and NBD_REP_INFO. */
export const InfoType = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission-phase commands (the request's 16-bit type). */
export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** Command flags (the request's 16-bit flags). */
export const CommandFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply chunk flags. */
export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

/** Bit 15: every structured reply type with it set is an error chunk. */
export const REPLY_TYPE_ERROR_BIT = 0x8000;

/** Structured reply chunk types. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: REPLY_TYPE_ERROR_BIT + 1,
  ERROR_OFFSET: REPLY_TYPE_ERROR_BIT + 2,
} as const;

/** Error values of the transmission phase (not host errnos, though they share numbers). */
export const ErrorCode = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** Name of an NBD error value, e.g. `"EINVAL"`. */
export type ErrorName = keyof typeof ErrorCode;

/** Status flags of the `base:allocation` metadata context. */
export const AllocationState = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** The one metadata context we implement. */
export const BASE_ALLOCATION = "base:allocation";

/** Sizes of fixed-layout messages, in bytes. */
export const Size = {
  /** NBDMAGIC + IHAVEOPT + handshake flags. */
  SERVER_GREETING: 18,
  /** Client flags. */
  CLIENT_FLAGS: 4,
  /** IHAVEOPT + option + length. */
  OPTION_HEADER: 16,
  /** Magic + option + reply type + length. */
  OPTION_REPLY_HEADER: 20,
  /** Size + transmission flags, after NBD_OPT_EXPORT_NAME. */
  EXPORT_NAME_REPLY: 10,
  /** Reserved zeroes after the NBD_OPT_EXPORT_NAME reply, unless NO_ZEROES. */
  EXPORT_NAME_ZEROES: 124,
  /** Magic + flags + type + cookie + offset + length. */
  REQUEST_HEADER: 28,
  /** Magic + error + cookie. */
  SIMPLE_REPLY_HEADER: 16,
  /** Magic + flags + type + cookie + length. */
  STRUCTURED_REPLY_HEADER: 20,
} as const;

/** Field offsets inside a request header (28 bytes). */
export const RequestField = {
  MAGIC: 0,
  FLAGS: 4,
  TYPE: 6,
  COOKIE: 8,
  OFFSET: 16,
  LENGTH: 24,
} as const;

/** Limits we enforce on untrusted input (documented in docs/nbd.md). */
export const Limit = {
  /** Longest string (export name, query, message) per the protocol: 4096 bytes. */
  MAX_STRING: 4096,
  /** Options a client may send before choosing an export. */
  MAX_OPTIONS: 64,
  /** Largest option payload we accept; anything larger ends the connection unread. */
  MAX_OPTION_LENGTH: 64 * 1024,
  /** Meta context queries in one option. */
  MAX_META_QUERIES: 32,
  /** Info requests in one NBD_OPT_INFO / NBD_OPT_GO. */
  MAX_INFO_REQUESTS: 32,
  /** Largest READ or WRITE payload (also advertised as maximum block size). */
  MAX_PAYLOAD: 32 * 1024 * 1024,
  /** Preferred block size advertised in NBD_INFO_BLOCK_SIZE. */
  PREFERRED_BLOCK: 4096,
  /** Extents in one BLOCK_STATUS reply. */
  MAX_EXTENTS: 1024,
} as const;

function invert(table: Record<string, number>): Map<number, string> {
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(table)) m.set(v, k);
  return m;
}

const optionNames = invert(Option);
const optionReplyNames = invert(OptionReply);
const commandNames = invert(Command);
const errorNames = invert(ErrorCode);
const replyTypeNames = invert(ReplyType);
const infoNames = invert(InfoType);

function nameIn(names: Map<number, string>, prefix: string, value: number): string {
  const n = names.get(value);
  return n === undefined ? `${prefix}_UNKNOWN(${value})` : `${prefix}_${n}`;
}

/** `NBD_OPT_GO` for 7; `NBD_OPT_UNKNOWN(99)` for an unknown value. */
export function optionName(value: number): string {
  return nameIn(optionNames, "NBD_OPT", value);
}

/** `NBD_REP_ERR_UNSUP` for 2^31+1. */
export function optionReplyName(value: number): string {
  return nameIn(optionReplyNames, "NBD_REP", value);
}

/** `NBD_CMD_READ` for 0. */
export function commandName(value: number): string {
  return nameIn(commandNames, "NBD_CMD", value);
}

/** `NBD_EINVAL` for 22. */
export function errorName(value: number): string {
  return nameIn(errorNames, "NBD", value);
}

/** `NBD_REPLY_TYPE_OFFSET_DATA` for 1. */
export function replyTypeName(value: number): string {
  return nameIn(replyTypeNames, "NBD_REPLY_TYPE", value);
}

/** `NBD_INFO_BLOCK_SIZE` for 3. */
export function infoName(value: number): string {
  return nameIn(infoNames, "NBD_INFO", value);
}

/**
 * Names of the bits set in `bits`, using `table` (e.g. {@linkcode TransmissionFlag}); unknown
 * bits are shown as hex.
 */
export function flagNames(table: Record<string, number>, bits: number): string[] {
  const out: string[] = [];
  let rest = bits;
  for (const [k, v] of Object.entries(table)) {
    if ((bits & v) !== 0) {
      out.push(k);
      rest &= ~v;
    }
  }
  if (rest !== 0) out.push(`0x${rest.toString(16)}`);
  return out;
}
