import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import {
  buildDnsQuery,
  buildDnsReply,
  DnsRcode,
  DnsType,
  encodeName,
  parseDnsMessage,
  rcodeOf,
  readName,
} from "./message.ts";
import { parseIpv4 } from "../wire/address.ts";
import { DNS_QUERY_A, DNS_QUERY_AAAA } from "../wire/_test_data.ts";

const capturedA = DNS_QUERY_A.subarray(42);

Deno.test("parseDnsMessage - the captured busybox A query", () => {
  const msg = parseDnsMessage(capturedA);
  assertEquals(msg.questions, [{ name: "example.test", type: DnsType.A, class: 1 }]);
  assertEquals(parseDnsMessage(DNS_QUERY_AAAA.subarray(42)).questions[0]!.type, DnsType.AAAA);
});

Deno.test("buildDnsReply - A answers use a pointer to the question and parse back", () => {
  const q = parseDnsMessage(capturedA);
  const reply = parseDnsMessage(
    buildDnsReply(q, { rcode: 0, addresses: [parseIpv4("198.18.0.7")], ttl: 5 }),
  );
  assertEquals(reply.id, q.id);
  assertEquals(rcodeOf(reply), DnsRcode.NOERROR);
  assertEquals(reply.answers[0]!.name, "example.test");
  assertEquals(reply.answers[0]!.data, new Uint8Array([198, 18, 0, 7]));
  assertEquals(reply.answers[0]!.ttl, 5);
});

Deno.test("readName - compression: backward pointers work, forward and self pointers fail", () => {
  // "a.b" at 0, then "c" + pointer to 0 at 5.
  const bytes = new Uint8Array([1, 0x61, 1, 0x62, 0, 1, 0x63, 0xc0, 0]);
  assertEquals(readName(bytes, 5), { name: "c.a.b", next: 9 });
  assertThrows(() => readName(new Uint8Array([0xc0, 0]), 0), "does not point backwards");
  assertThrows(() => readName(new Uint8Array([0xc0, 2, 0]), 0), "does not point backwards");
  // A chain of pointers each going back still terminates.
  assertEquals(readName(new Uint8Array([0, 0xc0, 0, 0xc0, 1]), 3).name, "");
});

Deno.test("readName - caps: label over 63 (a reserved label type), name over 255, truncated label", () => {
  assertThrows(() => readName(new Uint8Array([64, ...new Uint8Array(64)]), 0), "label type 0x40");
  const long: number[] = [];
  for (let i = 0; i < 5; i++) long.push(63, ...new Uint8Array(63).fill(0x61));
  long.push(0);
  assertThrows(() => readName(new Uint8Array(long), 0), "longer than 255");
  assertThrows(() => readName(new Uint8Array([5, 0x61]), 0), "runs past the end");
  assertThrows(() => encodeName("a".repeat(64) + ".com"), "bad length");
});

Deno.test("parseDnsMessage - impossible counts and lengths name the field", () => {
  assertThrows(() => parseDnsMessage(new Uint8Array(11)), "field header");
  const many = buildDnsQuery("x.test", { id: 1, type: DnsType.A });
  many[5] = 200;
  assertThrows(() => parseDnsMessage(many), "field qdcount");
  const cut = buildDnsQuery("x.test", { id: 1, type: DnsType.A }).subarray(0, 20);
  assertThrows(() => parseDnsMessage(cut), "field question");
});
