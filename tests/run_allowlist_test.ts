/**
 * `shuru run --allow-host` against a hostile guest, end to end: a real TCG guest tries the
 * bypasses of the allow-list's name check on a connection to an allowed name (a ClientHello
 * split over two records, silence and then TLS for another name, a second keep-alive request
 * for another Host, an absolute-form target, two Host headers), and reaches an allowed name
 * that the host's resolver points at a loopback address. Each must be reset with its
 * `shuru: blocked` line, and the server behind the allowed name must never see a byte of it;
 * a server-first protocol to the allowed name keeps working.
 *
 * Everything happens in a namespace this test makes (tests/_netns.ts): the servers are on its
 * loopback, and its `/etc/resolv.conf` names a DNS server of ours there (tests/_dns_server.ts),
 * so `inside.test` goes through the host's real resolver path (Deno.resolveDns) and answers
 * 127.0.0.1, as DNS rebinding or a CNAME into a private network would.
 *
 * @module
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { requireTool, TestHome } from "./_shuru.ts";
import { BlackholeNetns, describe, fields, runShuru } from "./_netns.ts";

const RAW_SERVER = new URL("./_raw_server.ts", import.meta.url).pathname;
const DNS_SERVER = new URL("./_dns_server.ts", import.meta.url).pathname;

/** The guest's attempts; each prints `key=outcome` (reset, data, closed, timeout, ...). */
const GUEST_PY = `
import socket, ssl, sys, time
api, banner = int(sys.argv[1]), int(sys.argv[2])

def client_hello(name, split=None):
    """The first flight of Python's TLS client for name, optionally re-split in two records."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    if split is None:
        return data
    body = data[5:5 + int.from_bytes(data[3:5], "big")]
    out = b""
    for part in (body[:split], body[split:]):
        out += bytes([0x16, 3, 1]) + len(part).to_bytes(2, "big") + part
    return out

def attempt(key, payload, pause=0, first=None):
    result = "?"
    s = socket.create_connection(("api.test", api), timeout=15)
    try:
        if first is not None:
            s.sendall(first)
            got = b""
            while not got.endswith(b"ok"):
                chunk = s.recv(1000)
                if not chunk:
                    break
                got += chunk
        if pause:
            time.sleep(pause)
        s.sendall(payload)
        data = s.recv(1000)
        result = "closed" if data == b"" else "data"
    except (ConnectionResetError, BrokenPipeError):
        result = "reset"
    except socket.timeout:
        result = "timeout"
    finally:
        s.close()
    print(f"{key}={result}", flush=True)

attempt("split_hello", client_hello("evil.test", split=40))
# Silent past the relay's wait (3 s): it dials for a server-first protocol, then TLS comes.
attempt("silent_tls", client_hello("evil.test"), pause=5)
attempt("keepalive", b"GET /2 HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n",
        first=b"GET /1 HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n")
attempt("absolute", b"GET http://evil.test/ HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n")
attempt("duphost", b"GET / HTTP/1.1\\r\\nHost: api.test\\r\\nHost: evil.test\\r\\n\\r\\n")

s = socket.create_connection(("api.test", banner), timeout=15)
greeting = s.recv(100)
s.sendall(b"EHLO guest\\r\\n")
reply = s.recv(100)
s.close()
print("banner=" + (greeting + reply).decode().replace("\\r\\n", "|"), flush=True)

try:
    socket.create_connection(("inside.test", api), timeout=15).close()
    print("inside=open", flush=True)
except ConnectionRefusedError:
    print("inside=refused", flush=True)
except socket.gaierror:
    print("inside=noname", flush=True)
except socket.timeout:
    print("inside=timeout", flush=True)
`;

Deno.test(
  "run --allow-host: a hostile guest cannot get another name past the check; names resolving " +
    "to loopback are refused; server-first protocols work",
  async () => {
    await requireTool("python3", "python3");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create({ resolvConf: "nameserver 127.0.0.1\n" });
    const log = join(home.dir, "raw_server.jsonl");
    const raw = await ns.startScript(RAW_SERVER, [log]);
    const dns = await ns.startScript(DNS_SERVER, ["inside.test=127.0.0.1"]);
    try {
      assertEquals(dns.firstLine, "ready");
      const ports = JSON.parse(raw.firstLine) as { http: number; banner: number };
      const api = ports.http;
      const r = await runShuru(home, ns, [
        "run",
        "--allow-host",
        "api.test",
        "--allow-host",
        "inside.test",
        "--add-host",
        "api.test:127.0.0.1",
        "--",
        "sh",
        "-c",
        `python3 - ${api} ${ports.banner} <<'EOF'\n${GUEST_PY}\nEOF`,
      ]);
      const all = describe(r);
      assertEquals(r.code, 0, all);
      const f = fields(r.stdout);
      for (const key of ["split_hello", "silent_tls", "keepalive", "absolute", "duphost"]) {
        assertEquals(f[key], "reset", `${key}\n${all}`);
      }
      assertEquals(f.banner, "220 ready|250 ok|", all);
      assertEquals(f.inside, "refused", all);
      for (
        const line of [
          `shuru: blocked evil.test:${api} (TLS server name: not in --allow-host)`,
          `shuru: blocked evil.test:${api} (HTTP Host: not in --allow-host)`,
          `shuru: blocked api.test:${api} (HTTP request target names another host than its ` +
          "Host header)",
          `shuru: blocked api.test:${api} (HTTP request with 2 Host headers)`,
        ]
      ) {
        assert(r.stderr.includes(line), `missing: ${line}\n${all}`);
      }
      // 127.0.0.1 is loopback and the host's own address: either name is right.
      assert(
        r.stderr.split("\n").some((l) =>
          l.startsWith(
            `shuru: blocked inside.test:${api} (inside.test resolved to 127.0.0.1, a `,
          ) &&
          l.endsWith(" (use --add-host or --allow-private))")
        ),
        all,
      );
      // The allowed name's server saw the first keep-alive request and the banner exchange,
      // and never a byte naming evil.test.
      const records = (await Deno.readTextFile(log)).trim().split("\n").map((l) =>
        JSON.parse(l) as { server: string; conn: number; data: string }
      );
      const seen = records.map((x) => x.data).join("");
      assert(seen.includes("GET /1 HTTP/1.1\r\nHost: api.test\r\n\r\n"), JSON.stringify(records));
      assert(seen.includes("EHLO guest\r\n"), JSON.stringify(records));
      assert(!seen.includes("evil.test"), JSON.stringify(records));
    } finally {
      for (const child of [raw.child, dns.child]) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        await child.status;
        await child.stdout.cancel().catch(() => {});
      }
    }
  },
);
