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
