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

Deno.test("NetworkPolicy - private addresses open for --add-host and --allow-private only", () => {
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
  // An exact entry says which name, not where its DNS may point (rebinding, a CNAME into a
  // private network): refused too, for private, loopback and link-local alike.
  for (const addr of ["10.0.0.5", "127.0.0.1", "169.254.10.1", "192.168.1.9", "172.20.0.1"]) {
    const exact = p.checkConnection({ name: "db.corp.test", address: ip(addr), port: 5432 });
    assertEquals(exact.allowed, false, addr);
    if (!exact.allowed) {
      assertEquals(exact.reason.startsWith(`db.corp.test resolved to ${addr}, a `), true);
      assertEquals(exact.reason.endsWith("(use --add-host or --allow-private)"), true);
    }
  }
  // The same name at a public address is fine.
  assertEquals(
    p.checkConnection({ name: "db.corp.test", address: PUBLIC, port: 5432 }).allowed,
    true,
  );
  // --allow-private opens it.
  const open = new NetworkPolicy({ allowHosts: ["db.corp.test"], allowPrivate: true });
  assertEquals(
    open.checkConnection({ name: "db.corp.test", address: ip("10.0.0.5"), port: 5432 }).allowed,
    true,
  );
});

Deno.test("NetworkPolicy - documentation, benchmark, IETF and cloud host ranges are closed", () => {
  const p = new NetworkPolicy({ allowNet: true });
  const cases: Array<[string, string]> = [
    ["100.64.0.1", "RFC 6598"],
    ["100.127.255.254", "RFC 6598"],
    ["192.0.0.8", "IETF"],
    ["192.0.2.1", "documentation"],
    ["198.18.0.1", "benchmark"],
    ["198.19.255.254", "benchmark"],
    ["198.51.100.7", "documentation"],
    ["203.0.113.7", "documentation"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["240.0.0.1", "reserved"],
    ["255.255.255.254", "reserved"],
    ["255.255.255.255", "broadcast"],
    ["168.63.129.16", "Azure"],
  ];
  for (const [addr, words] of cases) {
    for (
      const d of [
        p.checkConnection({ address: ip(addr), port: 80 }),
        p.checkConnection({ name: "public.test", address: ip(addr), port: 80 }),
      ]
    ) {
      assertEquals(d.allowed, false, addr);
      if (!d.allowed) assertEquals(d.reason.includes(words), true, `${addr}: ${d.reason}`);
    }
  }
  // Their neighbours are public.
  for (const addr of ["100.128.0.1", "192.0.1.1", "198.20.0.1", "198.51.101.1", "168.63.129.17"]) {
    assertEquals(p.checkConnection({ address: ip(addr), port: 80 }).allowed, true, addr);
  }
});

Deno.test("NetworkPolicy - the host's own addresses are asked for at each decision", () => {
  const own = new Set<number>();
  const p = new NetworkPolicy({ allowNet: true, hostAddresses: () => own });
  const late = ip("93.184.216.99");
  assertEquals(p.checkConnection({ address: late, port: 80 }).allowed, true);
  own.add(late); // the host gained an address after start (a new interface, a VPN)
  const d = p.checkConnection({ name: "public.test", address: late, port: 80 });
  assertEquals(d.allowed, false);
  if (!d.allowed) assertEquals(d.reason.includes("host's own address"), true, d.reason);
  own.delete(late);
  assertEquals(p.checkConnection({ address: late, port: 80 }).allowed, true);
});

Deno.test("NetworkPolicy - names are normalised once; anything outside the syntax is refused", () => {
  const p = new NetworkPolicy({ allowHosts: ["api.test", "*.files.test"] });
  assertEquals(p.checkName("API.Test.").allowed, true);
  assertEquals(p.checkName("a_b.files.test").allowed, true);
  for (
    const bad of [
      "api.test..",
      ".api.test",
      "api..test",
      "evil.test\\.api.test", // a DNS label holding a dot, as readName shows it
      "evil test.files.test",
      "x\u0000.files.test",
      "\u212Aevil.files.test", // the Kelvin sign lower-cases to "k"
      "\u00e9.files.test",
      `${"a".repeat(64)}.files.test`,
      `${"a.".repeat(126)}files.test`,
      "",
    ]
  ) {
    assertEquals(p.checkName(bad), { allowed: false, reason: "not a valid host name" }, bad);
  }
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
