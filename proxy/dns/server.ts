/**
 * The guest's DNS server, sans-I/O: `handleDnsQuery` answers at once what needs no lookup
 * (AAAA and other types: an empty NOERROR, since the guest is IPv4-only; malformed: FORMERR;
 * a name outside the host name syntax of `name.ts`: NXDOMAIN)
 * and turns A questions into a lookup the caller resolves (policy, `--add-host`, the host's
 * resolver), then `finishDnsLookup` builds the reply.
 *
 * @module
 */

import { WireError } from "../wire/error.ts";
import {
  buildDnsReply,
  buildHeaderOnlyReply,
  DNS_CLASS_IN,
  type DnsMessage,
  DnsRcode,
  DnsType,
  isResponse,
  opcodeOf,
  parseDnsMessage,
} from "./message.ts";
import { normalizeHostName } from "./name.ts";

/** Port DNS is served on (UDP and TCP). */
export const DNS_PORT = 53;

/** The answer to a lookup. */
export type DnsLookupResult =
  /** A records (fake-pool addresses in production). */
  | { kind: "addresses"; addresses: number[]; ttl: number }
  /** Denied or nonexistent name. */
  | { kind: "nxdomain" }
  /** The host's resolver failed. */
  | { kind: "servfail" };

/** What to do with one query. */
export type DnsQueryOutcome =
  /** Send these bytes back now. */
  | { kind: "reply"; bytes: Uint8Array }
  /** Resolve `name` (type A), then call `finishDnsLookup(query, result)`. */
  | { kind: "lookup"; name: string; query: DnsMessage }
  /** Nothing to answer (a response, or too short to carry an id). */
  | { kind: "drop"; reason: string };

/** Classifies one query message from the guest. */
export function handleDnsQuery(bytes: Uint8Array): DnsQueryOutcome {
  let msg: DnsMessage;
  try {
    msg = parseDnsMessage(bytes);
  } catch (e) {
    if (!(e instanceof WireError)) throw e;
    const reply = buildHeaderOnlyReply(bytes, DnsRcode.FORMERR);
    return reply ? { kind: "reply", bytes: reply } : { kind: "drop", reason: e.message };
  }
  if (isResponse(msg)) return { kind: "drop", reason: "message is a response" };
  if (opcodeOf(msg) !== 0) {
    return { kind: "reply", bytes: buildDnsReply(msg, { rcode: DnsRcode.NOTIMP }) };
  }
  const q = msg.questions[0];
  if (msg.questions.length !== 1 || q === undefined) {
    return { kind: "reply", bytes: buildDnsReply(msg, { rcode: DnsRcode.FORMERR }) };
  }
  if (q.class !== DNS_CLASS_IN) {
    return { kind: "reply", bytes: buildDnsReply(msg, { rcode: DnsRcode.NOTIMP }) };
  }
  // One name rule for every question type: a name outside the host name syntax does not
  // exist (and is never handed to the policy or the host's resolver).
  const name = normalizeHostName(q.name);
  if (name === undefined) {
    return { kind: "reply", bytes: buildDnsReply(msg, { rcode: DnsRcode.NXDOMAIN }) };
  }
  if (q.type !== DnsType.A) {
    // IPv4 only: AAAA (and HTTPS, TXT, ...) get an empty answer at once, so resolvers move on
    // to the A answer without waiting.
    return { kind: "reply", bytes: buildDnsReply(msg, { rcode: DnsRcode.NOERROR }) };
  }
  return { kind: "lookup", name, query: msg };
}

/** Builds the reply to a looked-up query. */
export function finishDnsLookup(query: DnsMessage, result: DnsLookupResult): Uint8Array {
  switch (result.kind) {
    case "addresses":
      return buildDnsReply(query, {
        rcode: DnsRcode.NOERROR,
        addresses: result.addresses,
        ttl: result.ttl,
      });
    case "nxdomain":
      return buildDnsReply(query, { rcode: DnsRcode.NXDOMAIN });
    case "servfail":
      return buildDnsReply(query, { rcode: DnsRcode.SERVFAIL });
  }
}
