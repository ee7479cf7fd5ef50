/**
 * `shuru run --allow-net` end to end: real TCG guests whose NIC is served by our own stack.
 *
 * Every run with a NIC happens inside a network namespace this test makes (root), holding only
 * loopback and a veth pair whose far end never answers: the default route points at it, so an
 * address outside loopback is a black hole (a wrongly allowed connection hangs until curl's
 * --max-time instead of leaving the machine). The test's HTTP servers run in the same namespace
 * on 127.0.0.1. Only `--add-host` names are used, so the host resolver is never asked.
 *
 * @module
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { requireTool, TestHome } from "./_shuru.ts";
import {
  assertFastFailure,
  BlackholeNetns,
  describe,
  fields,
  HostServers,
  PROBE_FN,
  runShuru,
} from "./_netns.ts";

const BLOB_MIB = 16;

Deno.test("run without --allow-net: the guest has no NIC, only lo", async () => {
  await using home = await TestHome.create();
  const r = await runShuru(home, undefined, ["run", "--", "sh", "-c", "ls /sys/class/net"]);
  assertEquals(r.code, 0, describe(r));
  assertEquals(r.stdout.trim().split(/\s+/), ["lo"], describe(r));
});

Deno.test(
  "run --allow-net --add-host: DHCP, a host server on 127.0.0.1, 16 MiB both ways, " +
    "private and metadata addresses refused at once",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 1);
    const port = servers.ports[0]!;
    const netLog = join(home.dir, "net.jsonl");
    const script = [
      PROBE_FN,
      "set -u",
      "echo \"addr=$(ip -o -4 addr show dev eth0 | awk '{print $4}')\"",
      "echo \"route=$(ip route show default | awk '{print $3}')\"",
      'echo "resolv=$(grep nameserver /etc/resolv.conf)"',
      `echo "hello=$(curl -sS --max-time 30 http://api.test:${port}/)"`,
      `curl -sS --max-time 300 -o /tmp/blob http://api.test:${port}/blob`,
      'echo "down=$(sha256sum < /tmp/blob | cut -c1-64)"',
      `head -c ${BLOB_MIB}M /dev/urandom > /tmp/up`,
      'echo "up_local=$(stat -c %s /tmp/up) $(sha256sum < /tmp/up | cut -c1-64)"',
      `echo "up_remote=$(curl -sS --max-time 300 --data-binary @/tmp/up ` +
      `-H 'Content-Type: application/octet-stream' http://api.test:${port}/upload)"`,
      "probe private http://10.0.0.1/",
      "probe metadata http://169.254.169.254/latest/meta-data/",
      `probe loopback http://127.0.0.1:${port}/`,
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
      "--allow-net",
      "--add-host",
      "api.test:127.0.0.1",
      "--net-log",
      netLog,
      "--",
      "sh",
      "-c",
      script,
    ]);
    const all = describe(r);
    assertEquals(r.code, 0, all);
    const f = fields(r.stdout);
    assertEquals(f.addr, "10.0.2.15/24", all);
    assertEquals(f.route, "10.0.2.2", all);
    assertEquals(f.resolv, "nameserver 10.0.2.3", all);
    assertEquals(f.hello, `hello from port ${port}`, all);
    assertEquals(f.down, servers.blobSha256, all);
    const [size, localSha] = (f.up_local ?? "").split(" ");
    assertEquals(Number(size), BLOB_MIB * 1024 * 1024, all);
    assertEquals(f.up_remote, `${size} ${localSha}`, all);
    assertFastFailure(f, "private", 7, all);
    assertFastFailure(f, "metadata", 7, all);
    // The guest's own loopback: nothing listens there, and it never reaches the host.
    assertFastFailure(f, "loopback", 7, all);
    assert(r.stderr.includes("shuru: blocked 10.0.0.1:80 ("), all);
    assert(r.stderr.includes("shuru: blocked 169.254.169.254:80 ("), all);
    const records = (await Deno.readTextFile(netLog)).trim().split("\n").map((l) =>
      JSON.parse(l) as Record<string, unknown>
    );
    const allowed = records.filter((x) => x.decision === "allowed" && x.name === "api.test");
    assertEquals(allowed.length, 3, JSON.stringify(records));
    assert(
      allowed.some((x) => (x.bytesDown as number) >= BLOB_MIB * 1024 * 1024),
      JSON.stringify(records),
    );
    assert(
      allowed.some((x) => (x.bytesUp as number) >= BLOB_MIB * 1024 * 1024),
      JSON.stringify(records),
    );
    assert(
      records.some((x) => x.decision === "blocked" && x.address === "169.254.169.254"),
      JSON.stringify(records),
    );
    // Nothing left behind: the instance folder (with net.sock) is gone.
    const left: string[] = [];
    try {
      for await (const e of Deno.readDir(join(home.dir, "instances"))) left.push(e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    assertEquals(left, [], "instance folders left behind");
  },
);

Deno.test(
  "run --allow-net over the datagram link (SHURU_NET_LINK=datagram, a macOS host's link): " +
    "DHCP, 16 MiB both ways, a private address refused at once",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create({ env: { SHURU_NET_LINK: "datagram" } });
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 1);
    const port = servers.ports[0]!;
    const script = [
      PROBE_FN,
      "set -u",
      "echo \"addr=$(ip -o -4 addr show dev eth0 | awk '{print $4}')\"",
      'echo "mtu=$(cat /sys/class/net/eth0/mtu)"',
      `curl -sS --max-time 300 -o /tmp/blob http://api.test:${port}/blob`,
      'echo "down=$(sha256sum < /tmp/blob | cut -c1-64)"',
      `head -c ${BLOB_MIB}M /dev/urandom > /tmp/up`,
      'echo "up_local=$(stat -c %s /tmp/up) $(sha256sum < /tmp/up | cut -c1-64)"',
      `echo "up_remote=$(curl -sS --max-time 300 --data-binary @/tmp/up ` +
      `-H 'Content-Type: application/octet-stream' http://api.test:${port}/upload)"`,
      "probe private http://10.0.0.1/",
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
      "-v",
      "--allow-net",
      "--add-host",
      "api.test:127.0.0.1",
      "--",
      "sh",
      "-c",
      script,
    ]);
    const all = describe(r);
    assertEquals(r.code, 0, all);
    assert(r.stderr.includes("guest network over the dgram link, MTU 65520"), all);
    const f = fields(r.stdout);
    assertEquals(f.addr, "10.0.2.15/24", all);
    // The default MTU: each 64 KiB frame is one datagram.
    assertEquals(f.mtu, "65520", all);
    assertEquals(f.down, servers.blobSha256, all);
    assertEquals(f.up_remote, f.up_local, all);
    assertFastFailure(f, "private", 7, all);
  },
);

Deno.test(
  "run --allow-host: other names do not resolve and fail at once with a blocked line",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 1);
    const port = servers.ports[0]!;
    const script = [
      PROBE_FN,
      `echo "hello=$(curl -sS --max-time 30 http://api.test:${port}/)"`,
      `probe other http://other.test:${port}/`,
      "probe literal http://10.0.0.1/",
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
      "--allow-host",
      "api.test",
      "--add-host",
      "api.test:127.0.0.1",
      // Named, but not on the allow-list: must stay unreachable.
      "--add-host",
      "other.test:127.0.0.1",
      "--",
      "sh",
      "-c",
      script,
    ]);
    const all = describe(r);
    assertEquals(r.code, 0, all);
    const f = fields(r.stdout);
    assertEquals(f.hello, `hello from port ${port}`, all);
    assertFastFailure(f, "other", 6, all);
    assertFastFailure(f, "literal", 7, all);
    assert(r.stderr.includes("shuru: blocked other.test (not in --allow-host)"), all);
    assert(r.stderr.includes("shuru: blocked 10.0.0.1:80 (literal IP address"), all);
  },
);

Deno.test(
  "run --expose-host alone: the guest reaches that host port and nothing else",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 2);
    const [exposed, other] = servers.ports as [number, number];
    const script = [
      PROBE_FN,
      'echo "hello=$(curl -sS --max-time 30 http://host.shuru.internal:8080/)"',
      `probe other_port http://host.shuru.internal:${other}/`,
      `probe api http://api.test:${exposed}/`,
      "probe literal http://10.0.0.1/",
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
      "--expose-host",
      `8080:${exposed}`,
      "--add-host",
      "api.test:127.0.0.1",
      "--",
      "sh",
      "-c",
      script,
    ]);
    const all = describe(r);
    assertEquals(r.code, 0, all);
    const f = fields(r.stdout);
    assertEquals(f.hello, `hello from port ${exposed}`, all);
    assertFastFailure(f, "other_port", 7, all);
    assertFastFailure(f, "api", 6, all);
    assertFastFailure(f, "literal", 7, all);
    assert(r.stderr.includes(`port ${other} is not exposed`), all);
  },
);

Deno.test(
  "start --allow-host: a named sandbox reaches its allowed name; ps shows the network",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 1);
    const port = servers.ports[0]!;
    const name = "netbox";
    // The supervisor (and its relay) inherits the namespace from `shuru start`.
    const started = await runShuru(home, ns, [
      "start",
      "--name",
      name,
      "--allow-host",
      "api.test",
      "--add-host",
      "api.test:127.0.0.1",
    ]);
    assertEquals(started.code, 0, describe(started));
    try {
      const script = [
        PROBE_FN,
        `echo "hello=$(curl -sS --max-time 30 http://api.test:${port}/)"`,
        "probe metadata http://169.254.169.254/",
      ].join("\n");
      const r = await runShuru(home, ns, ["exec", name, "--", "sh", "-c", script]);
      const all = describe(r);
      assertEquals(r.code, 0, all);
      const f = fields(r.stdout);
      assertEquals(f.hello, `hello from port ${port}`, all);
      assertFastFailure(f, "metadata", 7, all);
      const ps = await runShuru(home, ns, ["ps", "--json"]);
      assertEquals(ps.code, 0, describe(ps));
      const records = JSON.parse(ps.stdout) as { name: string; network: string }[];
      assertEquals(records.find((x) => x.name === name)?.network, "allow-host api.test");
    } finally {
      const stopped = await runShuru(home, ns, ["stop", name]);
      assertEquals(stopped.code, 0, describe(stopped));
    }
  },
);

Deno.test("run refuses bad network flags before booting, in one line", async () => {
  await using home = await TestHome.create();
  for (
    const [args, expected] of [
      [["--allow-host", "exa mple.com"], "Cannot use host pattern"],
      [["--allow-net", "--add-host", "api.test"], "expected NAME:IPV4"],
      [["--expose-host", "70000"], "must be 1-65535"],
    ] as const
  ) {
    const r = await runShuru(home, undefined, ["run", ...args, "--", "true"]);
    assert(r.code !== 0, describe(r));
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, describe(r));
    assert(lines[0]!.startsWith("shuru: ") && lines[0]!.includes(expected), describe(r));
  }
});
