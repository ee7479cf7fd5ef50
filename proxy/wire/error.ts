/**
 * The one error type of the wire layer: a parse error that names the protocol, the field and why.
 *
 * @module
 */

/** Why a packet was rejected. */
export type WireErrorCode =
  /** The buffer is shorter than a header or a length field says. */
  | "truncated"
  /** A field holds a value the protocol forbids (bad version, header length below minimum, ...). */
  | "malformed"
  /** A checksum does not match the bytes. */
  | "checksum"
  /** Valid, but something this stack deliberately does not handle (fragments, IP options on ARP). */
  | "unsupported";

/** A packet that failed validation. Callers count these; they never reach a state machine. */
export class WireError extends Error {
  /** Why the packet was rejected. */
  readonly code: WireErrorCode;
  /** Protocol name, e.g. `"tcp"`. */
  readonly protocol: string;
  /** Field name from the protocol's field table, e.g. `"data_offset"`. */
  readonly field: string;

  /** Builds "Cannot parse <protocol> packet: field <field> <reason>". */
  constructor(code: WireErrorCode, protocol: string, field: string, reason: string) {
    super(`Cannot parse ${protocol} packet: field ${field} ${reason}`);
    this.name = "WireError";
    this.code = code;
    this.protocol = protocol;
    this.field = field;
  }
}
