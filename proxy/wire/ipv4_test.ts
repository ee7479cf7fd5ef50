import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { IPV4_HEADER_LEN, Ipv4Packet, Ipv4Repr } from "./ipv4.ts";
import { ipv4ToString } from "./address.ts";
import { IpProtocol } from "./constants.ts";
import { ICMP_ECHO_REQUEST, TCP_SYN } from "./_test_data.ts";

const captured = TCP_SYN.subarray(14);

Deno.test("Ipv4Packet - deconstruct the captured SYN's header", () => {
  const p = Ipv4Packet.newChecked(captured);
  assertEquals(p.version, 4);
  assertEquals(p.headerLen, 20);
  assertEquals(p.totalLen, 60);
  assertEquals(p.ttl, 64);
  assertEquals(p.protocol, IpProtocol.TCP);
  assertEquals(p.isFragment, false);
  assertEquals(p.verifyChecksum(), true);
  assertEquals(ipv4ToString(p.source), "10.0.2.15");
  assertEquals(ipv4ToString(p.destination), "198.18.0.1");
});

Deno.test("Ipv4Repr - parse, emit: header identical except ident, payload untouched", () => {
  const p = Ipv4Packet.newChecked(captured);
  const repr = Ipv4Repr.parse(p);
  assertEquals(repr.payloadLen, 40);
  const out = new Uint8Array(IPV4_HEADER_LEN + repr.payloadLen);
  out.set(p.payload, IPV4_HEADER_LEN);
  Ipv4Repr.emit(repr, Ipv4Packet.newUnchecked(out));
  const q = Ipv4Packet.newChecked(out);
  assertEquals(q.verifyChecksum(), true);
  assertEquals(Ipv4Repr.parse(q), repr);
  // Only the identification (and so the checksum) differ from the kernel's header.
  assertEquals(out.subarray(6, 10), captured.subarray(6, 10));
  assertEquals(out.subarray(12), captured.subarray(12));
});

Deno.test("Ipv4Packet - impossible lengths name the field", () => {
  assertThrows(() => Ipv4Packet.newChecked(captured.subarray(0, 19)), "field header");
  const v6 = captured.slice();
  v6[0] = 0x65;
  assertThrows(() => Ipv4Packet.newChecked(v6), "field version");
  const ihl = captured.slice();
  ihl[0] = 0x44;
  assertThrows(() => Ipv4Packet.newChecked(ihl), "field ihl");
  const long = captured.slice();
  long[3] = 61;
  assertThrows(() => Ipv4Packet.newChecked(long), "field total_length");
  const short = captured.slice();
  short[3] = 19;
  assertThrows(() => Ipv4Packet.newChecked(short), "field total_length");
});

Deno.test("Ipv4Packet - Ethernet padding beyond total_length is excluded from the payload", () => {
  const padded = new Uint8Array(captured.length + 6);
  padded.set(captured);
  assertEquals(Ipv4Packet.newChecked(padded).payload.length, 40);
});

Deno.test("Ipv4Repr - checksum edge cases: one bit flipped, ignore mode, fragments", () => {
  const bad = ICMP_ECHO_REQUEST.slice(14);
  bad[8] = bad[8]! ^ 1; // TTL
  const err = assertThrows(() => Ipv4Repr.parse(Ipv4Packet.newChecked(bad)), "field checksum");
  assertEquals((err as { code?: string }).code, "checksum");
  assertEquals(Ipv4Repr.parse(Ipv4Packet.newChecked(bad), "ignore").ttl, 65);
  const frag = captured.slice();
  frag[6] = 0x20; // more fragments
  const p = Ipv4Packet.newChecked(frag);
  p.fillChecksum();
  assertThrows(() => Ipv4Repr.parse(p), "field flags_fragment");
});
