import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { ARP_LEN, ArpPacket, ArpRepr } from "./arp.ts";
import { ipv4ToString, macToString, parseIpv4, parseMac } from "./address.ts";
import { ArpOperation } from "./constants.ts";
import { ARP_REQUEST } from "./_test_data.ts";

const captured = ARP_REQUEST.subarray(14);

Deno.test("ArpPacket - deconstruct the captured who-has", () => {
  const p = ArpPacket.newChecked(captured);
  assertEquals(p.hardwareType, 1);
  assertEquals(p.protocolType, 0x0800);
  assertEquals(p.operation, ArpOperation.REQUEST);
  assertEquals(macToString(p.senderMac), "a2:18:cd:0a:8b:3a");
  assertEquals(ipv4ToString(p.senderIp), "10.0.2.15");
  assertEquals(ipv4ToString(p.targetIp), "10.0.2.2");
});

Deno.test("ArpRepr - parse and emit round trip gives the captured bytes", () => {
  const repr = ArpRepr.parse(ArpPacket.newChecked(captured));
  const out = new Uint8Array(ArpRepr.bufferLen());
  ArpRepr.emit(repr, ArpPacket.newUnchecked(out));
  assertEquals(out, captured);
});

Deno.test("ArpRepr - construct a reply", () => {
  const repr: ArpRepr = {
    operation: ArpOperation.REPLY,
    senderMac: parseMac("52:55:0a:00:02:02"),
    senderIp: parseIpv4("10.0.2.2"),
    targetMac: parseMac("a2:18:cd:0a:8b:3a"),
    targetIp: parseIpv4("10.0.2.15"),
  };
  const out = new Uint8Array(ARP_LEN);
  ArpRepr.emit(repr, ArpPacket.newUnchecked(out));
  assertEquals(ArpRepr.parse(ArpPacket.newChecked(out)), repr);
});

Deno.test("ArpPacket - impossible length and wrong types are rejected by name", () => {
  assertThrows(() => ArpPacket.newChecked(captured.subarray(0, 27)), "field tpa");
  const bad = captured.slice();
  bad[1] = 6; // hardware type 6 (IEEE 802)
  assertThrows(() => ArpRepr.parse(ArpPacket.newChecked(bad)), "field htype");
  const badOp = captured.slice();
  badOp[7] = 9;
  assertThrows(() => ArpRepr.parse(ArpPacket.newChecked(badOp)), "field oper");
});
