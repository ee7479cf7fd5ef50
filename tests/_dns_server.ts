/**
 * Test fixture: a DNS server on 127.0.0.1:53 inside the test's network namespace, which
 * `ip netns exec` makes the host resolver's server through `/etc/netns/NS/resolv.conf`. It
 * answers A questions for the names given as `NAME=IPV4` arguments and NXDOMAIN for every
 * other name (empty NOERROR for other types), using our own DNS codec. Prints `ready` once
 * listening.
 *
 * Usage: `deno run -A tests/_dns_server.ts NAME=IPV4...`
 *
 * @module
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { buildDnsReply, DnsRcode, DnsType, parseDnsMessage, parseIpv4 } from "../proxy/mod.ts";

const names = new Map<string, number>();
for (const arg of Deno.args) {
  const [name, ip] = arg.split("=");
  names.set(name!.toLowerCase(), parseIpv4(ip!));
}

const socket = dgram.createSocket("udp4");
socket.on("message", (msg: Buffer, peer: { address: string; port: number }) => {
  let reply: Uint8Array;
  try {
    const query = parseDnsMessage(new Uint8Array(msg));
    const q = query.questions[0];
    const address = q === undefined ? undefined : names.get(q.name);
    reply = q?.type !== DnsType.A
      ? buildDnsReply(query, { rcode: DnsRcode.NOERROR })
      : address === undefined
      ? buildDnsReply(query, { rcode: DnsRcode.NXDOMAIN })
      : buildDnsReply(query, { rcode: DnsRcode.NOERROR, addresses: [address], ttl: 5 });
  } catch {
    return;
  }
  socket.send(Buffer.from(reply), peer.port, peer.address);
});
socket.bind(53, "127.0.0.1", () => console.log("ready"));
