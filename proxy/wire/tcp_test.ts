import { assertEquals, assertThrows } from "../../tests/_assert.ts";
import { encodeTcpOptions, parseTcpOptions, segmentLen, TcpPacket, TcpRepr } from "./tcp.ts";
import { parseIpv4 } from "./address.ts";
import { TcpFlag } from "./constants.ts";
import { TCP_SYN } from "./_test_data.ts";

const captured = TCP_SYN.subarray(34);
const ctx = { source: parseIpv4("10.0.2.15"), destination: parseIpv4("198.18.0.1") };

Deno.test("TcpPacket - deconstruct the captured SYN", () => {
  const p = TcpPacket.newChecked(captured);
  assertEquals(p.sourcePort, 0xea3e);
  assertEquals(p.destinationPort, 8080);
  assertEquals(p.sequence, 0x4cf02990);
  assertEquals(p.headerLen, 40);
  assertEquals(p.flags, TcpFlag.SYN);
  assertEquals(p.window, 64240);
  assertEquals(p.payload.length, 0);
  assertEquals(p.verifyChecksum(ctx.source, ctx.destination), true);
});

Deno.test("TcpRepr - parse reads MSS, SACK-permitted and window scale; skips timestamps", () => {
  const repr = TcpRepr.parse(TcpPacket.newChecked(captured), ctx);
  assertEquals(repr.options, { maxSegmentSize: 1460, sackPermitted: true, windowScale: 10 });
  assertEquals(segmentLen(repr), 1);
});

Deno.test("TcpRepr - construct, emit and parse a SYN-ACK with options and a data segment", () => {
  const synAck: TcpRepr = {
    sourcePort: 8080,
    destinationPort: 0xea3e,
    sequence: 0xfffffff0,
    acknowledgment: 0x4cf02991,
    flags: TcpFlag.SYN | TcpFlag.ACK,
    window: 65535,
    options: { maxSegmentSize: 1460, windowScale: 7 },
    payload: new Uint8Array(0),
  };
  const back = { source: ctx.destination, destination: ctx.source };
  const out = new Uint8Array(TcpRepr.bufferLen(synAck));
  assertEquals(out.length, 28);
  TcpRepr.emit(synAck, TcpPacket.newUnchecked(out), back);
  assertEquals(TcpRepr.parse(TcpPacket.newChecked(out), back), synAck);

  const data: TcpRepr = {
    ...synAck,
    flags: TcpFlag.ACK | TcpFlag.PSH,
    options: {},
    payload: new TextEncoder().encode("hello"),
  };
  const out2 = new Uint8Array(TcpRepr.bufferLen(data));
  TcpRepr.emit(data, TcpPacket.newUnchecked(out2), back);
  const parsed = TcpRepr.parse(TcpPacket.newChecked(out2), back);
  assertEquals(new TextDecoder().decode(parsed.payload), "hello");
  assertEquals(segmentLen(parsed), 5);
});

Deno.test("TcpPacket - impossible lengths name data_offset", () => {
  assertThrows(() => TcpPacket.newChecked(captured.subarray(0, 19)), "field header");
  const small = captured.slice();
  small[12] = 0x40; // 16 bytes
  assertThrows(() => TcpPacket.newChecked(small), "field data_offset");
  assertThrows(() => TcpPacket.newChecked(captured.subarray(0, 39)), "field data_offset");
});

Deno.test("TcpRepr - checksum edge cases and forbidden flag combinations", () => {
  const bad = captured.slice();
  bad[39] = bad[39]! ^ 1;
  assertThrows(() => TcpRepr.parse(TcpPacket.newChecked(bad), ctx), "field checksum");
  assertEquals(
    TcpRepr.parse(TcpPacket.newChecked(bad), { ...ctx, checksum: "ignore" }).options.windowScale,
    11,
  );
  // An odd-length payload is padded with a zero byte for the checksum.
  const odd: TcpRepr = {
    sourcePort: 1,
    destinationPort: 2,
    sequence: 0,
    acknowledgment: 0,
    flags: TcpFlag.ACK,
    window: 0,
    options: {},
    payload: new Uint8Array([0xab]),
  };
  const out = new Uint8Array(TcpRepr.bufferLen(odd));
  TcpRepr.emit(odd, TcpPacket.newUnchecked(out), ctx);
  assertEquals(TcpRepr.parse(TcpPacket.newChecked(out), ctx).payload, new Uint8Array([0xab]));
  const synFin = captured.slice();
  synFin[13] = TcpFlag.SYN | TcpFlag.FIN;
  assertThrows(
    () => TcpRepr.parse(TcpPacket.newChecked(synFin), { ...ctx, checksum: "ignore" }),
    "field flags",
  );
});

Deno.test("parseTcpOptions - malformed lists name the options field", () => {
  assertThrows(() => parseTcpOptions(new Uint8Array([2])), "no length byte");
  assertThrows(() => parseTcpOptions(new Uint8Array([2, 1, 0, 0])), "length 1");
  assertThrows(() => parseTcpOptions(new Uint8Array([2, 8, 0, 0])), "length 8");
  assertThrows(() => parseTcpOptions(new Uint8Array([3, 4, 1, 1])), "not 3");
  assertEquals(parseTcpOptions(new Uint8Array([3, 3, 200, 0])), { windowScale: 14 });
  assertEquals(parseTcpOptions(new Uint8Array([1, 1, 0, 2, 4, 0, 0])), {});
  assertEquals(parseTcpOptions(encodeTcpOptions({ maxSegmentSize: 536, windowScale: 0 })), {
    maxSegmentSize: 536,
    windowScale: 0,
  });
});
