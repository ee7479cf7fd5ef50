/**
 * Transmission-phase requests: decoding the 28-byte header and {@linkcode validateRequest},
 * the one place every request is checked against the negotiated state before anything touches
 * the backend (nbdkit's `validate_request`).
 *
 * @module
 */

import {
  Command,
  CommandFlag,
  commandName,
  type ErrorName,
  flagNames,
  Limit,
  Magic,
  RequestField,
  Size,
  TransmissionFlag,
} from "./wire.ts";

/** One decoded request header. */
export interface Request {
  /** Command flags. */
  flags: number;
  /** Command (see `Command` in wire.ts). */
  type: number;
  /** The client's 8-byte cookie (a copy), echoed in the reply. */
  cookie: Uint8Array;
  /** Byte offset; values above 2^53 are approximated, which only matters for range checks. */
  offset: number;
  /** Byte length. */
  length: number;
}

/** Decodes a 28-byte request header. Returns `null` when the magic is wrong. */
export function decodeRequest(header: Uint8Array): Request | null {
  const v = new DataView(header.buffer, header.byteOffset, Size.REQUEST_HEADER);
  if (v.getUint32(RequestField.MAGIC) !== Magic.REQUEST) return null;
  return {
    flags: v.getUint16(RequestField.FLAGS),
    type: v.getUint16(RequestField.TYPE),
    cookie: header.slice(RequestField.COOKIE, RequestField.COOKIE + 8),
    offset: v.getUint32(RequestField.OFFSET) * 2 ** 32 + v.getUint32(RequestField.OFFSET + 4),
    length: v.getUint32(RequestField.LENGTH),
  };
}

/** Encodes a request header (used by tests and the hostile client). */
export function encodeRequest(req: Request): Uint8Array {
  const b = new Uint8Array(Size.REQUEST_HEADER);
  const v = new DataView(b.buffer);
  v.setUint32(RequestField.MAGIC, Magic.REQUEST);
  v.setUint16(RequestField.FLAGS, req.flags);
  v.setUint16(RequestField.TYPE, req.type);
  b.set(req.cookie.subarray(0, 8), RequestField.COOKIE);
  v.setBigUint64(RequestField.OFFSET, BigInt(req.offset));
  v.setUint32(RequestField.LENGTH, req.length);
  return b;
}

/** What a request is checked against: the negotiated state of the connection. */
export interface RequestContext {
  /** Export size in bytes. */
  size: number;
  /** Transmission flags sent to the client. */
  flags: number;
  /** Structured replies negotiated. */
  structuredReplies: boolean;
  /** `base:allocation` selected. */
  baseAllocation: boolean;
}

/** A request the server refuses: the NBD error and a message for the log and the client. */
export interface RequestRejection {
  /** NBD error value name. */
  error: ErrorName;
  /** "Cannot <action>: <state>". */
  message: string;
}

/** Flags each command accepts (FUA is added for every command when SEND_FUA is advertised). */
const ALLOWED_FLAGS: Record<number, number> = {
  [Command.READ]: CommandFlag.DF,
  [Command.WRITE]: 0,
  [Command.FLUSH]: 0,
  [Command.TRIM]: 0,
  [Command.WRITE_ZEROES]: CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.REQ_ONE,
};

/** Flags that are valid only when the matching transmission flag was advertised. */
const FLAG_NEEDS: [number, number][] = [
  [CommandFlag.FUA, TransmissionFlag.SEND_FUA],
  [CommandFlag.DF, TransmissionFlag.SEND_DF],
  [CommandFlag.FAST_ZERO, TransmissionFlag.SEND_FAST_ZERO],
];

/**
 * Every check of a request against the negotiated state, in one place (nbdkit's
 * `validate_request`). Returns `null` when the request may be dispatched. Not called for
 * NBD_CMD_DISC, which is never refused.
 */
export function validateRequest(req: Request, ctx: RequestContext): RequestRejection | null {
  const name = commandName(req.type);
  const allowed = ALLOWED_FLAGS[req.type];
  if (allowed === undefined) {
    return { error: "EINVAL", message: `Cannot run ${name}: unknown or unsupported command` };
  }
  const writes = req.type === Command.WRITE || req.type === Command.TRIM ||
    req.type === Command.WRITE_ZEROES;
  if (writes && (ctx.flags & TransmissionFlag.READ_ONLY) !== 0) {
    return { error: "EPERM", message: `Cannot run ${name}: the export is read-only` };
  }
  let mask = allowed | CommandFlag.FUA;
  for (const [flag, needs] of FLAG_NEEDS) {
    if ((ctx.flags & needs) === 0) mask &= ~flag;
  }
  if ((req.flags & ~mask) !== 0) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: flags ${
        flagNames(CommandFlag, req.flags & ~mask).join("|")
      } are not valid here`,
    };
  }
  if (req.type === Command.FLUSH) {
    if (req.offset !== 0 || req.length !== 0) {
      return { error: "EINVAL", message: `Cannot run ${name}: offset and length must be 0` };
    }
    return null;
  }
  if (req.type === Command.BLOCK_STATUS && !(ctx.structuredReplies && ctx.baseAllocation)) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: no metadata context was negotiated`,
    };
  }
  if (req.length === 0) {
    return { error: "EINVAL", message: `Cannot run ${name}: length is 0` };
  }
  if (req.offset > ctx.size || req.length > ctx.size - req.offset) {
    return {
      error: req.type === Command.WRITE || req.type === Command.WRITE_ZEROES ? "ENOSPC" : "EINVAL",
      message: `Cannot run ${name}: offset ${req.offset} + length ${req.length} is beyond ` +
        `the end of the export (${ctx.size} bytes)`,
    };
  }
  if ((req.type === Command.READ || req.type === Command.WRITE) && req.length > Limit.MAX_PAYLOAD) {
    return {
      error: "EINVAL",
      message: `Cannot run ${name}: length ${req.length} exceeds the maximum ${Limit.MAX_PAYLOAD}`,
    };
  }
  return null;
}
