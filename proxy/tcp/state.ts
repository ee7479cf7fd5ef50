/**
 * RFC 793 connection states. The values are the RFC's own names, so logs read like the RFC.
 * This stack only opens passively (the guest connects to us), so SYN-SENT is never entered;
 * it is kept so the type is the RFC's.
 *
 * @module
 */

/** Every RFC 793 state, in the RFC's order. */
export const TCP_STATES = [
  "CLOSED",
  "LISTEN",
  "SYN-SENT",
  "SYN-RECEIVED",
  "ESTABLISHED",
  "FIN-WAIT-1",
  "FIN-WAIT-2",
  "CLOSE-WAIT",
  "CLOSING",
  "LAST-ACK",
  "TIME-WAIT",
] as const;

/** One RFC 793 state, printed as the RFC names it (e.g. "SYN-RECEIVED"). */
export type TcpState = typeof TCP_STATES[number];

/** States in which both sides have exchanged SYNs (RFC 793 "synchronized states"). */
export function isSynchronized(state: TcpState): boolean {
  return state !== "CLOSED" && state !== "LISTEN" && state !== "SYN-SENT" &&
    state !== "SYN-RECEIVED";
}

/** States in which the guest may still send data (it has not sent FIN). */
export function canReceive(state: TcpState): boolean {
  return state === "ESTABLISHED" || state === "FIN-WAIT-1" || state === "FIN-WAIT-2";
}

/** States in which we may still send data (we have not sent FIN). */
export function canSend(state: TcpState): boolean {
  return state === "ESTABLISHED" || state === "CLOSE-WAIT";
}
