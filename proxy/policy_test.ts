import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { EXPOSE_HOST_NAME, NetworkPolicy, parseHostPattern } from "./policy.ts";
import { parseIpv4 } from "./wire/address.ts";

const ip = parseIpv4;
const PUBLIC = ip("93.184.216.34");

Deno.test("parseHostPattern - accepts names and wildcards, rejects junk", () => {
  assertEquals(parseHostPattern("Example.COM."), "example.com");
  assertEquals(parseHostPattern("*.example.com"), "*.example.com");
  for (const bad of ["", "*", "a.*.com", "exa mple.com", "-a.com", "*.*.com"]) {
    assertThrows(() => parseHostPattern(bad), "Cannot use host pattern");
  }
});

Deno.test("NetworkPolicy - off by default: nothing resolves or connects", () => {
  const p = new NetworkPolicy();
  assertEquals(p.networkEnabled, false);
  assertEquals(p.checkName("example.com").allowed, false);
  assertEquals(p.checkConnection({ address: PUBLIC, port: 443 }).allowed, false);
});

Deno.test("NetworkPolicy - allow-list: exact and wildcard names; wildcard skips the apex", () => {
  const p = new NetworkPolicy({ allowHosts: ["example.com", "*.pypi.org"] });
  assertEquals(p.allowNet, true);
  assertEquals(p.checkName("example.com").allowed, true);
  assertEquals(p.checkName("files.pypi.org").allowed, true);
  assertEquals(p.checkName("a.b.pypi.org").allowed, true);
  assertEquals(p.checkName("pypi.org"), { allowed: false, reason: "not in --allow-host" });
  assertEquals(p.checkName("evilexample.com").allowed, false);
  assertEquals(p.checkName("notpypi.org").allowed, false);
});

Deno.test("NetworkPolicy - allow-list: literal IPs are refused unless listed", () => {
  const p = new NetworkPolicy({ allowHosts: ["example.com", "93.184.216.34"] });
  assertEquals(p.checkConnection({ address: ip("1.1.1.1"), port: 443 }).allowed, false);
  assertEquals(p.checkConnection({ address: PUBLIC, port: 443 }), {
    allowed: true,
    hostname: "93.184.216.34",
    port: 443,
  });
  assertEquals(p.checkConnection({ name: "example.com", address: PUBLIC, port: 80 }).allowed, true);
  assertEquals(p.checkConnection({ name: "other.com", address: PUBLIC, port: 80 }).allowed, false);
});

Deno.test("NetworkPolicy - private and special ranges closed by default", () => {
  const p = new NetworkPolicy({
    allowNet: true,
    hostAddresses: [ip("192.0.2.50")],
    stackAddresses: [ip("10.0.2.2")],
  });
  const cases: Array<[string, string]> = [
    ["127.0.0.1", "loopback"],
    ["10.1.2.3", "RFC 1918"],
    ["172.16.0.1", "RFC 1918"],
    ["192.168.1.1", "RFC 1918"],
    ["169.254.169.254", "cloud metadata"],
    ["169.254.1.1", "link-local"],
    ["100.64.0.1", "RFC 6598"],
    ["224.0.0.251", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["0.0.0.0", "this network"],
    ["192.0.2.50", "host's own"],
    ["10.0.2.2", "gateway"],
  ];
  for (const [addr, words] of cases) {
    const d = p.checkConnection({ address: ip(addr), port: 80 });
    assertEquals(d.allowed, false, addr);
    if (!d.allowed) assertEquals(d.reason.includes(words), true, `${addr}: ${d.reason}`);
  }
  assertEquals(p.checkConnection({ address: PUBLIC, port: 80 }).allowed, true);
  assertEquals(
    new NetworkPolicy({ allowNet: true, allowPrivate: true }).checkConnection({
      address: ip("10.1.2.3"),
      port: 80,
    }).allowed,
    true,
  );
});

Deno.test("NetworkPolicy - private addresses open for --add-host and exact entries only", () => {
  const p = new NetworkPolicy({
    allowHosts: ["api.test", "*.corp.test", "db.corp.test"],
    addHosts: { "api.test": "127.0.0.1", "other.test": "127.0.0.1" },
  });
  // --add-host + listed: allowed to the host's loopback.
  assertEquals(p.checkConnection({ name: "api.test", address: ip("127.0.0.1"), port: 8080 }), {
    allowed: true,
    hostname: "127.0.0.1",
    port: 8080,
  });
  // --add-host alone allows nothing when there is an allow-list.
  assertEquals(p.checkName("other.test").allowed, false);
  // A wildcard name resolving to a private address is DNS rebinding: refused.
  const rebind = p.checkConnection({ name: "x.corp.test", address: ip("10.0.0.5"), port: 80 });
  assertEquals(rebind.allowed, false);
  // The exact entry opens it.
  assertEquals(
    p.checkConnection({ name: "db.corp.test", address: ip("10.0.0.5"), port: 5432 }).allowed,
    true,
  );
});

Deno.test("NetworkPolicy - expose-host opens only its ports, even without --allow-net", () => {
  const p = new NetworkPolicy({ exposeHost: [{ guestPort: 8000, hostPort: 18000 }] });
  assertEquals(p.networkEnabled, true);
  assertEquals(p.checkName(EXPOSE_HOST_NAME).allowed, true);
  assertEquals(p.checkName("example.com").allowed, false);
  assertEquals(p.checkConnection({ name: EXPOSE_HOST_NAME, address: 0, port: 8000 }), {
    allowed: true,
    hostname: "127.0.0.1",
    port: 18000,
  });
  assertEquals(p.checkConnection({ name: EXPOSE_HOST_NAME, address: 0, port: 22 }).allowed, false);
  assertEquals(p.checkConnection({ address: PUBLIC, port: 80 }).allowed, false);
});

Deno.test("NetworkPolicy - the gateway and DNS addresses stay closed with --allow-private", () => {
  for (
    const p of [
      new NetworkPolicy({ allowNet: true, allowPrivate: true, stackAddresses: [ip("10.0.2.2")] }),
      new NetworkPolicy({ allowHosts: ["10.0.2.2"], stackAddresses: [ip("10.0.2.2")] }),
    ]
  ) {
    for (const port of [22, 80, 8080]) {
      const d = p.checkConnection({ address: ip("10.0.2.2"), port });
      assertEquals(d.allowed, false, `port ${port}`);
      if (!d.allowed) assertEquals(d.reason.startsWith("gateway address"), true, d.reason);
    }
  }
  // Other private addresses do open with --allow-private.
  const open = new NetworkPolicy({
    allowNet: true,
    allowPrivate: true,
    stackAddresses: [ip("10.0.2.2")],
  });
  assertEquals(open.checkConnection({ address: ip("10.0.2.4"), port: 80 }).allowed, true);
});
