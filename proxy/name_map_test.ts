import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { FakeIpPool } from "./name_map.ts";
import { ipv4ToString } from "./wire/address.ts";

Deno.test("FakeIpPool - same name same address, and back", () => {
  const pool = new FakeIpPool();
  const a = pool.assign("Example.com");
  assertEquals(ipv4ToString(a), "198.18.0.1");
  assertEquals(pool.assign("example.com"), a);
  assertEquals(pool.nameOf(a), "example.com");
  assertEquals(ipv4ToString(pool.assign("other.test")), "198.18.0.2");
  assertEquals(pool.nameOf(0x01020304), undefined);
});

Deno.test("FakeIpPool - bounded: the least recently used name is evicted", () => {
  const pool = new FakeIpPool({ cidr: "10.9.0.0/29", maxNames: 3 });
  const a = pool.assign("a");
  const b = pool.assign("b");
  pool.assign("c");
  pool.assign("a"); // a is now the youngest
  const d = pool.assign("d");
  assertEquals(pool.size, 3);
  assertEquals(pool.nameOf(a), "a");
  assertEquals(pool.nameOf(d), "d");
  assertEquals(pool.nameOf(b), undefined); // b was the oldest
});

Deno.test("FakeIpPool - the network and broadcast addresses are never handed out", () => {
  const pool = new FakeIpPool({ cidr: "10.9.0.0/30" });
  const got = new Set([pool.assign("a"), pool.assign("b"), pool.assign("c"), pool.assign("d")]);
  for (const addr of got) assertEquals(["10.9.0.1", "10.9.0.2"].includes(ipv4ToString(addr)), true);
  assertThrows(() => new FakeIpPool({ cidr: "10.9.0.0/31" }), "at least a /30");
});
