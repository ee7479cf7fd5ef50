/**
 * The fixed newstyle handshake (server side): greeting, client flags, then option haggling
 * until the client picks an export (NBD_OPT_GO / NBD_OPT_EXPORT_NAME), aborts, or hangs up.
 *
 * The client is hostile until proven otherwise: the number of options and each option's length
 * are capped before anything is allocated ({@linkcode Limit}), strings are checked for length,
 * NUL bytes and UTF-8, and every parse of an option payload is exact (trailing bytes are an
 * error). A malformed option gets NBD_REP_ERR_INVALID and haggling goes on; only framing
 * violations (bad magic, unknown client flags, oversize option, unknown export on
 * NBD_OPT_EXPORT_NAME, too many options) end the connection.
 *
 * Options answered: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT,
 * SET_META_CONTEXT (`base:allocation` only). Everything else (STARTTLS, EXTENDED_HEADERS,
 * unknown codes) gets NBD_REP_ERR_UNSUP.
 *
 * @module
 */

import { type BufferedReader, type ByteSink, writeAll } from "./_io.ts";
import { NbdProtocolError } from "./errors.ts";
import {
  BASE_ALLOCATION,
  ClientFlag,
  HandshakeFlag,
  InfoType,
  Limit,
  Magic,
  Option,
  optionName,
  OptionReply,
  Size,
  TransmissionFlag,
} from "./wire.ts";
import { concatBytes } from "../io/mod.ts";

/** What the server offers during the handshake. */
export interface ExportOffer {
  /** Export names a client may ask for ("" is the default export). */
  names: readonly string[];
  /** Name listed by NBD_OPT_LIST. */
  listName: string;
  /** Device size in bytes. */
  size: number;
  /** Transmission flags, without SEND_DF (added when structured replies are negotiated). */
  flags: number;
  /** `true` when the `base:allocation` context can be offered (backend has blockStatus). */
  blockStatus: boolean;
  /** Human-readable description for NBD_INFO_DESCRIPTION (optional). */
  description?: string;
}

/** The outcome of a successful handshake. */
export interface Negotiated {
  /** The export the client chose. */
  exportName: string;
  /** `true` when NBD_OPT_STRUCTURED_REPLY was acknowledged. */
  structuredReplies: boolean;
  /** Context id of `base:allocation` if the client selected it, else `null`. */
  baseAllocationId: number | null;
  /** Transmission flags as sent to the client. */
  flags: number;
  /** Options the client sent (for logs). */
  optionCount: number;
}

/** Context id we hand out for `base:allocation` (any nonzero value works). */
export const BASE_ALLOCATION_ID = 1;

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Decodes an untrusted protocol string; `null` if too long, not UTF-8, or containing NUL. */
export function decodeString(bytes: Uint8Array): string | null {
  if (bytes.length > Limit.MAX_STRING) return null;
  if (bytes.includes(0)) return null;
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** A reply to one option: type plus payload. */
export interface OptionReplyMsg {
  /** NBD_REP_* type. */
  type: number;
  /** Payload, if any. */
  data?: Uint8Array;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** Encodes one option reply (header + payload). */
export function encodeOptionReply(option: number, type: number, data?: Uint8Array): Uint8Array {
  const len = data?.length ?? 0;
  const out = new Uint8Array(Size.OPTION_REPLY_HEADER + len);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, Magic.OPTION_REPLY);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, len);
  if (data) out.set(data, Size.OPTION_REPLY_HEADER);
  return out;
}

function errorReply(type: number, message: string): OptionReplyMsg {
  return { type, data: encoder.encode(message) };
}

/** A cursor over an option payload; every read is bounds-checked and returns null past the end. */
class PayloadCursor {
  #v: DataView;
  #b: Uint8Array;
  #o = 0;
  constructor(b: Uint8Array) {
    this.#b = b;
    this.#v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  get remaining(): number {
    return this.#b.length - this.#o;
  }
  u16(): number | null {
    if (this.remaining < 2) return null;
    const x = this.#v.getUint16(this.#o);
    this.#o += 2;
    return x;
  }
  u32(): number | null {
    if (this.remaining < 4) return null;
    const x = this.#v.getUint32(this.#o);
    this.#o += 4;
    return x;
  }
  /** A u32-length-prefixed string. */
  string(): string | null {
    const n = this.u32();
    if (n === null || n > this.remaining || n > Limit.MAX_STRING) return null;
    const s = decodeString(this.#b.subarray(this.#o, this.#o + n));
    this.#o += n;
    return s;
  }
}

/** Parsed NBD_OPT_INFO / NBD_OPT_GO payload. */
export interface InfoRequest {
  /** Export name. */
  name: string;
  /** Requested NBD_INFO_* types. */
  infos: number[];
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data; `null` when malformed. */
export function parseInfoRequest(data: Uint8Array): InfoRequest | null {
  const c = new PayloadCursor(data);
  const name = c.string();
  if (name === null) return null;
  const count = c.u16();
  if (count === null || count > Limit.MAX_INFO_REQUESTS || c.remaining !== count * 2) return null;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(c.u16()!);
  return { name, infos };
}

/** Parsed NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
export interface MetaRequest {
  /** Export name. */
  name: string;
  /** Context queries, e.g. `base:allocation`. */
  queries: string[];
}

/** Parses a meta context option; `null` when malformed. */
export function parseMetaRequest(data: Uint8Array): MetaRequest | null {
  const c = new PayloadCursor(data);
  const name = c.string();
  if (name === null) return null;
  const count = c.u32();
  if (count === null || count > Limit.MAX_META_QUERIES) return null;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const q = c.string();
    if (q === null) return null;
    queries.push(q);
  }
  if (c.remaining !== 0) return null;
  return { name, queries };
}

function infoExport(size: number, flags: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint16(0, InfoType.EXPORT);
  v.setBigUint64(2, BigInt(size));
  v.setUint16(10, flags);
  return b;
}

function infoBlockSize(): Uint8Array {
  const b = new Uint8Array(14);
  const v = new DataView(b.buffer);
  v.setUint16(0, InfoType.BLOCK_SIZE);
  v.setUint32(2, 1);
  v.setUint32(6, Limit.PREFERRED_BLOCK);
  v.setUint32(10, Limit.MAX_PAYLOAD);
  return b;
}

function infoString(type: number, s: string): Uint8Array {
  const t = new Uint8Array(2);
  new DataView(t.buffer).setUint16(0, type);
  return concatBytes([t, encoder.encode(s)]);
}

function metaContextReply(id: number): Uint8Array {
  return concatBytes([u32(id), encoder.encode(BASE_ALLOCATION)]);
}

/** State carried through option haggling. */
export interface HaggleState {
  /** NBD_OPT_STRUCTURED_REPLY acknowledged. */
  structuredReplies: boolean;
  /** Context id of `base:allocation` when selected. */
  baseAllocationId: number | null;
}

/** Result of answering one option: replies, and whether haggling goes on. */
export type OptionOutcome =
  | { kind: "continue"; replies: OptionReplyMsg[] }
  | { kind: "go"; replies: OptionReplyMsg[]; exportName: string }
  | { kind: "abort"; replies: OptionReplyMsg[] };

function flagsFor(offer: ExportOffer, st: HaggleState): number {
  return offer.flags | (st.structuredReplies ? TransmissionFlag.SEND_DF : 0);
}

/**
 * Decides the reply to one option (anything but NBD_OPT_EXPORT_NAME, which has no reply
 * framing). Pure: mutates only `st`.
 */
export function answerOption(
  option: number,
  data: Uint8Array,
  ctx: { offer: ExportOffer; state: HaggleState },
): OptionOutcome {
  const { offer, state: st } = ctx;
  switch (option) {
    case Option.ABORT:
      return { kind: "abort", replies: [{ type: OptionReply.ACK }] };
    case Option.LIST: {
      if (data.length !== 0) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_INVALID, "NBD_OPT_LIST takes no data")],
        };
      }
      const name = encoder.encode(offer.listName);
      return {
        kind: "continue",
        replies: [
          { type: OptionReply.SERVER, data: concatBytes([u32(name.length), name]) },
          { type: OptionReply.ACK },
        ],
      };
    }
    case Option.STRUCTURED_REPLY: {
      if (data.length !== 0) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data")],
        };
      }
      if (st.structuredReplies) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_INVALID, "structured replies already negotiated")],
        };
      }
      st.structuredReplies = true;
      return { kind: "continue", replies: [{ type: OptionReply.ACK }] };
    }
    case Option.INFO:
    case Option.GO: {
      const req = parseInfoRequest(data);
      if (req === null) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_INVALID, `malformed ${optionName(option)}`)],
        };
      }
      if (!offer.names.includes(req.name)) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_UNKNOWN, `no export named "${req.name}"`)],
        };
      }
      const replies: OptionReplyMsg[] = [
        { type: OptionReply.INFO, data: infoExport(offer.size, flagsFor(offer, st)) },
      ];
      const wanted = new Set(req.infos);
      if (wanted.has(InfoType.NAME)) {
        replies.push({ type: OptionReply.INFO, data: infoString(InfoType.NAME, req.name) });
      }
      if (wanted.has(InfoType.DESCRIPTION) && offer.description !== undefined) {
        replies.push({
          type: OptionReply.INFO,
          data: infoString(InfoType.DESCRIPTION, offer.description),
        });
      }
      // Always advertise block sizes: min 1 (any alignment works), max = our payload cap, so
      // well-behaved clients never send a request we would have to refuse for its size.
      replies.push({ type: OptionReply.INFO, data: infoBlockSize() });
      replies.push({ type: OptionReply.ACK });
      return option === Option.GO
        ? { kind: "go", replies, exportName: req.name }
        : { kind: "continue", replies };
    }
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT: {
      const set = option === Option.SET_META_CONTEXT;
      if (!st.structuredReplies) {
        return {
          kind: "continue",
          replies: [
            errorReply(
              OptionReply.ERR_INVALID,
              `${optionName(option)} needs NBD_OPT_STRUCTURED_REPLY first`,
            ),
          ],
        };
      }
      const req = parseMetaRequest(data);
      if (req === null) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_INVALID, `malformed ${optionName(option)}`)],
        };
      }
      if (!offer.names.includes(req.name)) {
        return {
          kind: "continue",
          replies: [errorReply(OptionReply.ERR_UNKNOWN, `no export named "${req.name}"`)],
        };
      }
      // LIST with no queries lists everything; LIST also accepts the bare namespace "base:".
      const matches = offer.blockStatus &&
        (set ? req.queries.includes(BASE_ALLOCATION) : req.queries.length === 0 ||
          req.queries.some((q) => q === BASE_ALLOCATION || q === "base:"));
      const replies: OptionReplyMsg[] = [];
      if (matches) {
        replies.push({
          type: OptionReply.META_CONTEXT,
          data: metaContextReply(set ? BASE_ALLOCATION_ID : 0),
        });
      }
      if (set) st.baseAllocationId = matches ? BASE_ALLOCATION_ID : null;
      replies.push({ type: OptionReply.ACK });
      return { kind: "continue", replies };
    }
    default:
      return {
        kind: "continue",
        replies: [errorReply(OptionReply.ERR_UNSUP, `${optionName(option)} is not supported`)],
      };
  }
}

/** Encodes the server greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Uint8Array {
  const b = new Uint8Array(Size.SERVER_GREETING);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, Magic.NBDMAGIC);
  v.setBigUint64(8, Magic.IHAVEOPT);
  v.setUint16(16, HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES);
  return b;
}

/**
 * Runs the server side of the handshake. Returns what was negotiated, or `null` when the client
 * aborted (NBD_OPT_ABORT) or hung up between options. Throws {@linkcode NbdProtocolError} on a
 * framing violation; the caller then closes the connection.
 */
export async function serverHandshake(
  reader: BufferedReader,
  sink: ByteSink,
  offer: ExportOffer,
): Promise<Negotiated | null> {
  await writeAll(sink, encodeGreeting());
  const cf = await reader.view(Size.CLIENT_FLAGS, "client flags");
  if (cf === null) return null;
  const clientFlags = new DataView(cf.buffer, cf.byteOffset, 4).getUint32(0);
  const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
  if ((clientFlags & ~known) !== 0) {
    throw new NbdProtocolError(
      "BAD_CLIENT_FLAGS",
      `Cannot accept client: unknown client flags 0x${clientFlags.toString(16)}`,
    );
  }
  const noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
  const state: HaggleState = { structuredReplies: false, baseAllocationId: null };

  for (let count = 1; count <= Limit.MAX_OPTIONS; count++) {
    const h = await reader.view(Size.OPTION_HEADER, "option header");
    if (h === null) return null;
    const hv = new DataView(h.buffer, h.byteOffset, Size.OPTION_HEADER);
    const magic = hv.getBigUint64(0);
    const option = hv.getUint32(8);
    const length = hv.getUint32(12);
    if (magic !== Magic.IHAVEOPT) {
      throw new NbdProtocolError(
        "BAD_MAGIC",
        `Cannot read option: magic is 0x${magic.toString(16)}, expected IHAVEOPT`,
      );
    }
    // Checked before allocating: a hostile length must not become a 4 GiB buffer.
    if (length > Limit.MAX_OPTION_LENGTH) {
      throw new NbdProtocolError(
        "OPTION_TOO_LONG",
        `Cannot read ${optionName(option)}: length ${length} exceeds ${Limit.MAX_OPTION_LENGTH}`,
      );
    }
    const data = new Uint8Array(length);
    await reader.readInto(data, `${optionName(option)} data`);

    if (option === Option.EXPORT_NAME) {
      const name = decodeString(data);
      if (name === null || !offer.names.includes(name)) {
        // NBD_OPT_EXPORT_NAME has no error reply: the protocol says to hang up.
        throw new NbdProtocolError(
          "UNKNOWN_EXPORT",
          `Cannot serve export ${name === null ? "(invalid name)" : `"${name}"`}: no such export`,
        );
      }
      const flags = flagsFor(offer, state);
      const reply = new Uint8Array(
        Size.EXPORT_NAME_REPLY + (noZeroes ? 0 : Size.EXPORT_NAME_ZEROES),
      );
      const rv = new DataView(reply.buffer);
      rv.setBigUint64(0, BigInt(offer.size));
      rv.setUint16(8, flags);
      await writeAll(sink, reply);
      return { exportName: name, ...state, flags, optionCount: count };
    }

    const outcome = answerOption(option, data, { offer, state });
    const out = concatBytes(outcome.replies.map((r) => encodeOptionReply(option, r.type, r.data)));
    if (outcome.kind === "abort") {
      // The client may already have closed; a failed ACK is not an error.
      await writeAll(sink, out).catch(() => {});
      return null;
    }
    await writeAll(sink, out);
    if (outcome.kind === "go") {
      return {
        exportName: outcome.exportName,
        ...state,
        flags: flagsFor(offer, state),
        optionCount: count,
      };
    }
  }
  throw new NbdProtocolError(
    "TOO_MANY_OPTIONS",
    `Cannot finish handshake: client sent more than ${Limit.MAX_OPTIONS} options`,
  );
}
