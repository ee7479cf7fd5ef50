/**
 * End to end without a VM: the Linux kernel's own IPv4/TCP stack, in a network namespace whose
 * only link is a TAP device served by `proxy/` (the Relay), talks to a server on the host's
 * loopback. busybox udhcpc configures the namespace through our DHCP server, busybox nslookup
 * and curl use our DNS, and curl moves data both ways through our TCP.
 *
 * Nothing can leave the machine: the namespace has no other link, the resolver knows only the
 * test's names, and the dialer refuses any address but 127.0.0.1 even if the policy were wrong.
 * Needs root, /dev/net/tun, iproute2, busybox-static and curl (tests/host_packages.txt).
 */

import { assert, assertEquals } from "./assert.ts";
import { sh, TapLink, TapNamespace, tapPrerequisite } from "./net_tap.ts";
import { NetworkPolicy } from "../proxy/policy.ts";
import { type ConnectionRecord, Relay } from "../proxy/relay.ts";
import { ipv4ToString } from "../proxy/wire/address.ts";

const MIB = 1024 * 1024;
const TRANSFER = 32 * MIB;

function pattern(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
    out[i + 1] = x >>> 16;
    out[i + 2] = x >>> 8;
    out[i + 3] = x;
  }
  return out;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function requireTools(): Promise<void> {
  const missing = tapPrerequisite();
  if (missing) throw new Error(missing);
  for (
    const [tool, pkg] of [["busybox", "busybox-static"], ["curl", "curl"], [
      "sha256sum",
      "coreutils",
    ]]
  ) {
    const found = await sh(["sh", "-c", `command -v ${tool} || true`]);
    if (!found.trim()) throw new Error(`TAP tests need ${tool}: apt-get install ${pkg}`);
  }
}

Deno.test("proxy through a TAP device: Linux kernel TCP as the guest, host loopback server", async (t) => {
  await requireTools();
  const payload = pattern(TRANSFER);
  const payloadHash = await sha256(payload);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/hello") return new Response("hello from the host\n");
    if (url.pathname === "/download") return new Response(payload);
    if (url.pathname === "/upload") {
      const body = new Uint8Array(await req.arrayBuffer());
      return new Response(`${body.length} ${await sha256(body)}\n`);
    }
    return new Response("not found", { status: 404 });
  });
  const port = server.addr.port;
  const dir = await Deno.makeTempDir({ prefix: "shuru-tap-" });
  const tap = await TapNamespace.create();
  const netnsEtc = `/etc/netns/${tap.netns}`;
  const blocked: string[] = [];
  const records: ConnectionRecord[] = [];
  const relay = new Relay({
    link: new TapLink(tap),
    policy: new NetworkPolicy({
      allowHosts: ["api.test", "*.wild.test"],
      addHosts: { "api.test": "127.0.0.1" },
    }),
    // Only the test's names exist: nothing is ever asked of a real resolver.
    // rebind.wild.test plays DNS rebinding: a wildcard-allowed name resolving to 10.x.
    resolve: (name) => Promise.resolve(name === "rebind.wild.test" ? [0x0a010203] : []),
    dial: ({ hostname, port: p }) => {
      if (hostname !== "127.0.0.1") throw new Error(`test dialer refuses ${hostname}`);
      return Deno.connect({ hostname, port: p });
    },
    onBlocked: (line) => blocked.push(line),
    onConnection: (r) => records.push(r),
  });
  const running = relay.run();
  const inNs = (cmd: string[], opts: { allowFail?: boolean } = {}) => tap.exec(cmd, opts);
  try {
    await t.step(
      "busybox udhcpc gets address, router, DNS and MTU from our DHCP server",
      async () => {
        const script = `${dir}/udhcpc.sh`;
        await Deno.writeTextFile(
          script,
          `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ip route add default via "$router" dev "$interface"
    echo "dns=$dns mtu=$mtu lease=$lease" > ${dir}/lease.txt ;;
esac
`,
        );
        await Deno.chmod(script, 0o755);
        await inNs([
          "busybox",
          "udhcpc",
          "-i",
          tap.name,
          "-n",
          "-q",
          "-t",
          "3",
          "-T",
          "1",
          "-s",
          script,
        ]);
        const addr = await inNs(["ip", "-4", "addr", "show", "dev", tap.name]);
        assert(addr.includes("inet 10.0.2.15/24"), addr);
        const route = await inNs(["ip", "route"]);
        assert(route.includes("default via 10.0.2.2"), route);
        assertEquals(
          (await Deno.readTextFile(`${dir}/lease.txt`)).trim(),
          "dns=10.0.2.3 mtu=1500 lease=86400",
        );
        await Deno.mkdir(netnsEtc, { recursive: true });
        await Deno.writeTextFile(
          `${netnsEtc}/resolv.conf`,
          "nameserver 10.0.2.3\noptions timeout:2 attempts:1\n",
        );
      },
    );

    await t.step("ping to the gateway is answered", async () => {
      const out = await inNs(["busybox", "ping", "-c", "2", "-W", "2", "10.0.2.2"]);
      assert(out.includes("2 packets received"), out);
    });

    await t.step(
      "DNS: allowed name gets a pool address, denied name NXDOMAIN at once",
      async () => {
        const ok = await inNs(["busybox", "nslookup", "api.test", "10.0.2.3"]);
        assert(/Address:\s+198\.1[89]\./.test(ok), ok);
        const denied = await inNs(["busybox", "nslookup", "pypi.org", "10.0.2.3"], {
          allowFail: true,
        });
        // Answered NXDOMAIN, not left to time out (which prints "timed out", whatever the speed).
        assert(/NXDOMAIN/.test(denied), denied);
        assert(
          blocked.some((l) => l === "shuru: blocked pypi.org (not in --allow-host)"),
          blocked.join("\n"),
        );
      },
    );

    await t.step("curl reaches the host's loopback server by name", async () => {
      const body = await inNs(["curl", "-sS", "--max-time", "10", `http://api.test:${port}/hello`]);
      assertEquals(body, "hello from the host\n");
    });

    await t.step(`download ${TRANSFER / MIB} MiB: hash matches`, async () => {
      const started = performance.now();
      const out = await inNs([
        "sh",
        "-c",
        `curl -sS --max-time 120 http://api.test:${port}/download | sha256sum`,
      ]);
      const secs = (performance.now() - started) / 1000;
      assertEquals(out.split(" ")[0], payloadHash);
      console.log(`  download through the stack: ${(TRANSFER / MIB / secs).toFixed(1)} MiB/s`);
    });

    await t.step(`upload ${TRANSFER / MIB} MiB: hash matches`, async () => {
      const file = `${dir}/up.bin`;
      await Deno.writeFile(file, payload);
      const started = performance.now();
      const out = await inNs([
        "curl",
        "-sS",
        "--max-time",
        "120",
        "-H",
        "Expect:",
        "--data-binary",
        `@${file}`,
        `http://api.test:${port}/upload`,
      ]);
      const secs = (performance.now() - started) / 1000;
      assertEquals(out.trim(), `${TRANSFER} ${payloadHash}`);
      console.log(`  upload through the stack: ${(TRANSFER / MIB / secs).toFixed(1)} MiB/s`);
    });

    await t.step("50 parallel connections all complete", async () => {
      const out = await inNs([
        "sh",
        "-c",
        `seq 1 50 | xargs -P 50 -I{} curl -sS --max-time 20 http://api.test:${port}/hello`,
      ]);
      assertEquals(out.split("\n").filter((l) => l === "hello from the host").length, 50);
    });

    await t.step(
      "refused at once: literal IP, gateway port, metadata, 10.x, wildcard rebinding",
      async () => {
        for (
          const url of [
            `http://203.0.113.5:${port}/`,
            "http://10.0.2.2:80/",
            "http://169.254.169.254/",
            "http://10.9.9.9/",
            `http://rebind.wild.test:${port}/`,
          ]
        ) {
          const res = await new Deno.Command("ip", {
            args: ["netns", "exec", tap.netns, "curl", "-sS", "--max-time", "5", url],
            stdout: "null",
            stderr: "piped",
          }).output();
          assert(!res.success, `${url} must fail`);
          // curl exit 7: connection refused (our RST), not 28 (timeout): "at once" by its kind.
          assertEquals(res.code, 7, `${url}: ${new TextDecoder().decode(res.stderr)}`);
        }
        assert(
          blocked.some((l) => l.startsWith("shuru: blocked 203.0.113.5:")),
          blocked.join("\n"),
        );
        assert(
          blocked.some((l) => l.includes("rebind.wild.test") && l.includes("RFC 1918")),
          blocked.join("\n"),
        );
      },
    );

    await t.step(
      "an allowed address carrying another name (Host, TLS SNI) is cut off",
      async () => {
        const poolIp = ipv4ToString(relay.pool.assign("api.test"));
        const host = await new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            tap.netns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Host: evil.test",
            `http://api.test:${port}/hello`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert(!host.success, "a request for evil.test must not reach the server");
        assertEquals(new TextDecoder().decode(host.stdout), "");
        const sni = await new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            tap.netns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--resolve",
            `tls-evil.test:${port}:${poolIp}`,
            `https://tls-evil.test:${port}/`,
          ],
          stdout: "null",
          stderr: "piped",
        }).output();
        assert(!sni.success, "TLS to tls-evil.test must fail");
        assert(
          blocked.some((l) =>
            l.startsWith(`shuru: blocked evil.test:${port} (HTTP Host: not in --allow-host`)
          ),
          blocked.join("\n"),
        );
        assert(
          blocked.some((l) =>
            l.startsWith(
              `shuru: blocked tls-evil.test:${port} (TLS server name: not in --allow-host`,
            )
          ),
          blocked.join("\n"),
        );
      },
    );

    await t.step("counters: nothing malformed from a real kernel, no internal errors", () => {
      const c = relay.stack.counters;
      assertEquals(c.internalErrors, 0, relay.stack.lastInternalError);
      assertEquals(c.malformed, 0);
      assertEquals(c.badChecksum, 0);
      assert(
        records.some((r) =>
          r.name === "api.test" && r.bytesDown > TRANSFER && r.decision === "allowed"
        ),
      );
    });
  } finally {
    relay.close();
    await running;
    await tap.close();
    await server.shutdown();
    await Deno.remove(netnsEtc, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
