import { assertEquals } from "../../tests/_assert.ts";
import { finishDnsLookup, handleDnsQuery } from "./server.ts";
import { buildDnsQuery, DnsRcode, DnsType, parseDnsMessage, rcodeOf } from "./message.ts";
import { DNS_QUERY_A, DNS_QUERY_AAAA } from "../wire/_test_data.ts";

Deno.test("handleDnsQuery - A becomes a lookup, then NOERROR with the address or NXDOMAIN", () => {
  const out = handleDnsQuery(DNS_QUERY_A.subarray(42));
  if (out.kind !== "lookup") throw new Error(`expected lookup, got ${out.kind}`);
  assertEquals(out.name, "example.test");
  const ok = parseDnsMessage(
    finishDnsLookup(out.query, { kind: "addresses", addresses: [0xc6120001], ttl: 1 }),
  );
  assertEquals(ok.answers.length, 1);
  const nx = parseDnsMessage(finishDnsLookup(out.query, { kind: "nxdomain" }));
  assertEquals(rcodeOf(nx), DnsRcode.NXDOMAIN);
  assertEquals(nx.answers, []);
});

Deno.test("handleDnsQuery - AAAA gets an empty NOERROR at once", () => {
  const out = handleDnsQuery(DNS_QUERY_AAAA.subarray(42));
  if (out.kind !== "reply") throw new Error(`expected reply, got ${out.kind}`);
  const msg = parseDnsMessage(out.bytes);
  assertEquals(rcodeOf(msg), DnsRcode.NOERROR);
  assertEquals(msg.answers, []);
  assertEquals(msg.questions[0]!.type, DnsType.AAAA);
});

Deno.test("handleDnsQuery - garbage with a header gets FORMERR; responses and scraps are dropped", () => {
  const bad = buildDnsQuery("a.test", { id: 7, type: DnsType.A });
  bad[12] = 0x80; // reserved label type
  const out = handleDnsQuery(bad);
  if (out.kind !== "reply") throw new Error("expected FORMERR reply");
  assertEquals(rcodeOf(parseDnsMessage(out.bytes)), DnsRcode.FORMERR);
  assertEquals(parseDnsMessage(out.bytes).id, 7);
  assertEquals(handleDnsQuery(new Uint8Array(5)).kind, "drop");
  const response = buildDnsQuery("a.test", { id: 7, type: DnsType.A });
  response[2] = response[2]! | 0x80;
  assertEquals(handleDnsQuery(response).kind, "drop");
});

/** A query for one name given as raw labels (bytes the guest chose). */
function rawQuery(labels: Uint8Array[], type: number): Uint8Array {
  const name = labels.flatMap((l) => [l.length, ...l]);
  return new Uint8Array([
    ...[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
    ...name,
    0,
    ...[type >> 8, type & 0xff, 0, 1],
  ]);
}

Deno.test("handleDnsQuery - names are normalised; names outside the syntax get NXDOMAIN", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const upper = handleDnsQuery(rawQuery([enc("API"), enc("Example"), enc("TEST")], DnsType.A));
  assertEquals(upper.kind === "lookup" ? upper.name : upper.kind, "api.example.test");
  const underscore = handleDnsQuery(rawQuery([enc("_dmarc"), enc("a-b"), enc("test")], DnsType.A));
  assertEquals(underscore.kind === "lookup" ? underscore.name : underscore.kind, "_dmarc.a-b.test");
  for (
    const labels of [
      [enc("evil.test"), enc("api"), enc("test")], // a dot inside a label
      [enc("evil\\"), enc("test")],
      [enc("ev il"), enc("test")],
      [new Uint8Array([0x65, 0x00, 0x76]), enc("test")],
      [new Uint8Array([0xc3, 0xa9]), enc("test")], // UTF-8 é
      [new Uint8Array([0xe2, 0x84, 0xaa]), enc("test")], // the Kelvin sign
    ]
  ) {
    for (const type of [DnsType.A, DnsType.AAAA]) {
      const out = handleDnsQuery(rawQuery(labels, type));
      if (out.kind !== "reply") throw new Error(`expected a reply for ${labels}, got ${out.kind}`);
      assertEquals(rcodeOf(parseDnsMessage(out.bytes)), DnsRcode.NXDOMAIN, String(labels));
    }
  }
});
