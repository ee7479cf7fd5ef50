/**
 * The wire layer: one *view* and one *representation* per protocol (smoltcp's pattern).
 *
 * - A view (`UdpPacket`, `TcpPacket`, ...) wraps a byte buffer with one getter and one setter
 *   per field; field offsets live in a private `field` table at the top of each file, checked
 *   once against the RFC diagram.
 * - A representation (`UdpRepr`, ...) is a plain object holding only valid values, with
 *   `parse` (view → repr), `emit` (repr → view) and `bufferLen`.
 *
 * Safety contract, the same for every protocol:
 * - `newChecked(bytes)` = `newUnchecked(bytes)` + `checkLen()`. Untrusted input (every byte from
 *   the guest) always goes through `newChecked`. Once `checkLen` passes, no getter reads out of
 *   bounds, and `parse` fails only on field values (throwing `WireError` naming the protocol,
 *   the field and the reason), never on lengths.
 * - `emit` needs a buffer of exactly `bufferLen` bytes, freshly allocated or fully written:
 *   output buffers never go through `newChecked`, since a reused buffer holds stale lengths.
 * - Checksums are verified by `parse` unless the caller passes `"ignore"` (fuzzing reaches
 *   deeper code that way); `emit` always fills them.
 * - TCP sequence numbers are compared only with `seq.ts` (modulo 2^32), never with `<`.
 *
 * @module
 */

export * from "./address.ts";
export * from "./arp.ts";
export * from "./checksum.ts";
export * from "./constants.ts";
export * from "./error.ts";
export * from "./ethernet.ts";
export * from "./icmpv4.ts";
export * from "./ipv4.ts";
export * from "./seq.ts";
export * from "./tcp.ts";
export * from "./udp.ts";
