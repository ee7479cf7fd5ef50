import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { UdpPacket, UdpRepr } from "./udp.ts";
import { parseIpv4 } from "./address.ts";
import { DNS_QUERY_A } from "./_test_data.ts";

const captured = DNS_QUERY_A.subarray(34);
const ctx = { source: parseIpv4("10.0.2.15"), destination: parseIpv4("10.0.2.3") };

Deno.test("UdpPacket - deconstruct the captured DNS query", () => {
  const p = UdpPacket.newChecked(captured);
  assertEquals(p.destinationPort, 53);
  assertEquals(p.length, 38);
  assertEquals(p.payload.length, 30);
  assertEquals(p.verifyChecksum(ctx.source, ctx.destination), true);
  // The checksum covers the addresses: another destination fails.
  assertEquals(p.verifyChecksum(ctx.source, parseIpv4("10.0.2.4")), false);
});

Deno.test("UdpRepr - parse and emit reproduce the captured datagram", () => {
  const repr = UdpRepr.parse(UdpPacket.newChecked(captured), ctx);
  const out = new Uint8Array(UdpRepr.bufferLen(repr));
  UdpRepr.emit(repr, UdpPacket.newUnchecked(out), ctx);
  assertEquals(out, captured);
});

Deno.test("UdpPacket - impossible lengths name the length field", () => {
  assertThrows(() => UdpPacket.newChecked(captured.subarray(0, 7)), "field header");
  const short = captured.slice();
  short[5] = 7;
  assertThrows(() => UdpPacket.newChecked(short), "field length");
  assertThrows(() => UdpPacket.newChecked(captured.subarray(0, 37)), "field length");
});

Deno.test("UdpRepr - checksum edge cases: zero means none, computed zero is sent as 0xffff", () => {
  const none = captured.slice();
  none[6] = 0;
  none[7] = 0;
  assertEquals(UdpRepr.parse(UdpPacket.newChecked(none), ctx).payload.length, 30);
  const bad = captured.slice();
  bad[20] = bad[20]! ^ 1;
  assertThrows(() => UdpRepr.parse(UdpPacket.newChecked(bad), ctx), "field checksum");
  const ignored = UdpRepr.parse(UdpPacket.newChecked(bad), { ...ctx, checksum: "ignore" });
  assertEquals(ignored.payload.length, 30);
  // Find a payload whose checksum computes to 0 and check it goes out as 0xffff.
  const zero = { source: 0, destination: 0 };
  for (let v = 0; v <= 0xffff; v++) {
    const repr = { sourcePort: 1, destinationPort: 2, payload: new Uint8Array([v >> 8, v & 0xff]) };
    const out = new Uint8Array(UdpRepr.bufferLen(repr));
    const p = UdpPacket.newUnchecked(out);
    UdpRepr.emit(repr, p, zero);
    if (p.checksum === 0xffff) {
      assertEquals(p.verifyChecksum(0, 0), true);
      return;
    }
  }
  throw new Error("no payload with checksum 0 found");
});
