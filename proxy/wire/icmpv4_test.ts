import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { Icmpv4Packet, Icmpv4Repr } from "./icmpv4.ts";
import { ICMP_ECHO_REQUEST } from "./_test_data.ts";

const captured = ICMP_ECHO_REQUEST.subarray(34);

Deno.test("Icmpv4Packet - deconstruct the captured echo request", () => {
  const p = Icmpv4Packet.newChecked(captured);
  assertEquals(p.type, 8);
  assertEquals(p.code, 0);
  assertEquals(p.data.length, 56);
  assertEquals(p.verifyChecksum(), true);
});

Deno.test("Icmpv4Repr - parse and emit reproduce the captured message", () => {
  const repr = Icmpv4Repr.parse(Icmpv4Packet.newChecked(captured));
  assertEquals(repr.kind, "echo-request");
  const out = new Uint8Array(Icmpv4Repr.bufferLen(repr));
  Icmpv4Repr.emit(repr, Icmpv4Packet.newUnchecked(out));
  assertEquals(out, captured);
});

Deno.test("Icmpv4Repr - construct an echo reply with an odd data length", () => {
  const repr: Icmpv4Repr = {
    kind: "echo-reply",
    ident: 0x1234,
    sequence: 7,
    data: new Uint8Array([1, 2, 3]),
  };
  const out = new Uint8Array(Icmpv4Repr.bufferLen(repr));
  Icmpv4Repr.emit(repr, Icmpv4Packet.newUnchecked(out));
  assertEquals(Icmpv4Repr.parse(Icmpv4Packet.newChecked(out)), repr);
});

Deno.test("Icmpv4Packet - impossible length, bad checksum and unknown type", () => {
  assertThrows(() => Icmpv4Packet.newChecked(captured.subarray(0, 7)), "field header");
  const bad = captured.slice();
  bad[10] = bad[10]! ^ 0xff;
  assertThrows(() => Icmpv4Repr.parse(Icmpv4Packet.newChecked(bad)), "field checksum");
  const ts = captured.slice();
  ts[0] = 13; // timestamp request
  const p = Icmpv4Packet.newUnchecked(ts);
  p.fillChecksum();
  assertThrows(() => Icmpv4Repr.parse(p), "field type");
});
