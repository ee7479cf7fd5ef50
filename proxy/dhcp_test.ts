import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { DhcpMessageType, DhcpOption, DhcpServer, emitDhcp, parseDhcp } from "./dhcp.ts";
import { macToString, parseIpv4 } from "./wire/address.ts";
import { DHCP_DISCOVER } from "./wire/_test_data.ts";

const discover = DHCP_DISCOVER.subarray(42);
const server = new DhcpServer({
  serverIp: parseIpv4("10.0.2.2"),
  clientIp: parseIpv4("10.0.2.15"),
  prefix: 24,
  router: parseIpv4("10.0.2.2"),
  dns: [parseIpv4("10.0.2.3")],
  leaseSeconds: 86400,
  mtu: 1500,
});

Deno.test("parseDhcp - the captured udhcpc DISCOVER", () => {
  const msg = parseDhcp(discover);
  assertEquals(msg.op, 1);
  assertEquals(msg.messageType, DhcpMessageType.DISCOVER);
  assertEquals(macToString(msg.chaddr), macToString(DHCP_DISCOVER.subarray(6, 12)));
});

Deno.test("DhcpServer - DISCOVER gets an OFFER with subnet, router, DNS, lease and MTU", () => {
  const offer = parseDhcp(emitDhcp(server.handle(parseDhcp(discover))!));
  assertEquals(offer.op, 2);
  assertEquals(offer.messageType, DhcpMessageType.OFFER);
  assertEquals(offer.yiaddr, parseIpv4("10.0.2.15"));
  assertEquals(offer.serverId, parseIpv4("10.0.2.2"));
  const reply = server.handle(parseDhcp(discover))!;
  assertEquals(reply.options.get(DhcpOption.SUBNET_MASK), new Uint8Array([255, 255, 255, 0]));
  assertEquals(reply.options.get(DhcpOption.DNS), new Uint8Array([10, 0, 2, 3]));
  assertEquals(reply.options.get(DhcpOption.MTU), new Uint8Array([5, 220]));
  assertEquals(reply.options.get(DhcpOption.LEASE_TIME), new Uint8Array([0, 1, 0x51, 0x80]));
});

Deno.test("DhcpServer - REQUEST for our address is ACKed, another address NAKed", () => {
  const req = {
    ...parseDhcp(discover),
    messageType: DhcpMessageType.REQUEST,
    requestedIp: parseIpv4("10.0.2.15"),
    serverId: parseIpv4("10.0.2.2"),
  };
  assertEquals(server.handle(req)!.messageType, DhcpMessageType.ACK);
  assertEquals(
    server.handle({ ...req, requestedIp: parseIpv4("10.0.2.99") })!.messageType,
    DhcpMessageType.NAK,
  );
  // A REQUEST naming another server is not ours to answer.
  assertEquals(server.handle({ ...req, serverId: parseIpv4("10.0.2.9") }), undefined);
});

Deno.test("parseDhcp - truncated, bad cookie and options running past the end", () => {
  assertThrows(() => parseDhcp(discover.subarray(0, 239)), "field options");
  const bad = discover.slice();
  bad[236] = 0;
  assertThrows(() => parseDhcp(bad), "field magic");
  const past = discover.slice(0, 244);
  past[240] = 53;
  past[241] = 200;
  assertThrows(() => parseDhcp(past), "runs past the end");
});
