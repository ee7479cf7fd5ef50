import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { EthernetFrame, EthernetRepr } from "./ethernet.ts";
import { macToString } from "./address.ts";
import { EtherType } from "./constants.ts";
import { ARP_REQUEST, TCP_SYN } from "./_test_data.ts";

Deno.test("EthernetFrame - deconstruct a captured ARP broadcast", () => {
  const f = EthernetFrame.newChecked(ARP_REQUEST);
  assertEquals(macToString(f.destination), "ff:ff:ff:ff:ff:ff");
  assertEquals(macToString(f.source), "a2:18:cd:0a:8b:3a");
  assertEquals(f.etherType, EtherType.ARP);
  assertEquals(f.payload.length, 28);
});

Deno.test("EthernetRepr - parse then emit reproduces the captured header", () => {
  const repr = EthernetRepr.parse(EthernetFrame.newChecked(TCP_SYN));
  assertEquals(repr.etherType, EtherType.IPV4);
  const out = new Uint8Array(EthernetRepr.bufferLen());
  EthernetRepr.emit(repr, EthernetFrame.newUnchecked(out));
  assertEquals(out, TCP_SYN.subarray(0, 14));
});

Deno.test("EthernetFrame - impossible length is a truncated error naming the field", () => {
  const err = assertThrows(() => EthernetFrame.newChecked(new Uint8Array(13)), "ethertype");
  assertEquals((err as { code?: string }).code, "truncated");
  EthernetFrame.newChecked(new Uint8Array(14));
});
