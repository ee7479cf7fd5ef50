/**
 * `shuru run --allow-net` under load, end to end with real TCG guests in a black-hole network
 * namespace (tests/_netns.ts): the guest's MTU, 64 MiB each way with SHA-256 compared, 100
 * connections open at once, the gateway's ports and the host's own addresses refused at once,
 * and a guest opening 5000 connections running into the stack's connection limit.
 *
 * Peers are only the test's servers inside the namespace, reached as `--add-host
 * api.test:127.0.0.1` (no resolver is asked); an address outside the namespace is a black hole.
 *
 * @module
 */

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
import { DEFAULT_GUEST_MTU } from "../runner/mod.ts";
import { DEFAULT_LIMITS } from "../proxy/stack.ts";

const BLOB_MIB = 64;
const PARALLEL = 100;
const FLOOD = 5000;
/** "The host's own" addresses besides loopback: one private, one that looks public. */
const OWN_PRIVATE = "192.168.77.7";
const OWN_PUBLIC = "203.0.113.7";

/**
 * Guest python: opens PARALLEL connections, waits until all are open, then asks each for
 * `/id/N` and checks the body. Prints `parallel=OK/N open_at_once=K errors=...`.
 */
const PARALLEL_PY = `
import socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
addr = socket.getaddrinfo("api.test", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
barrier = threading.Barrier(n)
lock = threading.Lock()
state = {"open": 0, "peak": 0}
results = [None] * n
def one(i):
    try:
        s = socket.create_connection(addr, timeout=120)
        with lock:
            state["open"] += 1
            state["peak"] = max(state["peak"], state["open"])
        barrier.wait(timeout=120)
        s.sendall(f"GET /id/{i} HTTP/1.1\\r\\nHost: api.test\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        results[i] = data.split(b"\\r\\n\\r\\n", 1)[-1] == f"id {i}\\n".encode() or repr(data[-40:])
    except Exception as e:
        results[i] = repr(e)
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok = sum(1 for r in results if r is True)
errors = sorted({str(r) for r in results if r is not True})[:3]
print(f"parallel={ok}/{n} open_at_once={state['peak']} errors={errors}")
`;

/**
 * Guest python: opens up to FLOOD connections one after another and keeps them open; counts
 * those accepted, refused (RST) and failed otherwise; then closes them all. Prints
 * `flood_open=A`, `flood_refused=R`, `flood_other={...}` and `flood_seconds=S` lines.
 */
const FLOOD_PY = `
import resource, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, n + 256))
addr = socket.getaddrinfo("api.test", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
socks, refused, other = [], 0, {}
t0 = time.monotonic()
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(addr)
        socks.append(s)
    except ConnectionRefusedError:
        refused += 1
        s.close()
    except OSError as e:
        other[type(e).__name__] = other.get(type(e).__name__, 0) + 1
        s.close()
print(f"flood_open={len(socks)}\\nflood_refused={refused}\\nflood_other={other}")
print(f"flood_seconds={time.monotonic() - t0:.1f}")
for s in socks:
    s.close()
`;

Deno.test(
  "run --allow-net: default MTU, 64 MiB both ways, 100 connections at once, gateway ports and " +
    "the host's own addresses refused at once",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create({
      hostAddresses: [`${OWN_PRIVATE}/32`, `${OWN_PUBLIC}/32`],
    });
    // Bound to 0.0.0.0 inside the namespace: reachable there on 127.0.0.1 and on the host's
    // own addresses, so only the policy stands between the guest and those.
    await using servers = await HostServers.start(ns, 1, {
      blobMiB: BLOB_MIB,
      hostname: "0.0.0.0",
    });
    const port = servers.ports[0]!;
    // The host itself reaches the server on its own public-looking address: a guest that got
    // through would be answered, not left hanging.
    const direct = await new Deno.Command(ns.prefix()[0]!, {
      args: [
        ...ns.prefix().slice(1),
        "curl",
        "-sS",
        "--max-time",
        "10",
        `http://${OWN_PUBLIC}:${port}/`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(direct.stdout), `hello from port ${port}\n`);

    const url = `http://api.test:${port}`;
    const script = [
      PROBE_FN,
      "set -u",
      'echo "mtu=$(cat /sys/class/net/eth0/mtu)"',
      `curl -sS --max-time 600 -o /tmp/blob ${url}/blob`,
      'echo "down=$(stat -c %s /tmp/blob) $(sha256sum < /tmp/blob | cut -c1-64)"',
      "rm -f /tmp/blob",
      `head -c ${BLOB_MIB}M /dev/urandom > /tmp/up`,
      'echo "up_local=$(stat -c %s /tmp/up) $(sha256sum < /tmp/up | cut -c1-64)"',
      `echo "up_remote=$(curl -sS --max-time 600 --data-binary @/tmp/up ` +
      `-H 'Content-Type: application/octet-stream' ${url}/upload)"`,
      "rm -f /tmp/up",
      `python3 - ${port} ${PARALLEL} <<'EOF'\n${PARALLEL_PY}\nEOF`,
      "probe gw22 http://10.0.2.2:22/",
      "probe gw80 http://10.0.2.2/",
      "probe gw8080 http://10.0.2.2:8080/",
      "probe dns80 http://10.0.2.3/",
      `probe own_private http://${OWN_PRIVATE}:${port}/`,
      `probe own_public http://${OWN_PUBLIC}:${port}/`,
      `echo "after=$(curl -sS --max-time 30 ${url}/)"`,
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
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
    const f = fields(r.stdout);
    assertEquals(Number(f.mtu), DEFAULT_GUEST_MTU, all);
    assertEquals(f.down, `${BLOB_MIB * 1024 * 1024} ${servers.blobSha256}`, all);
    const [size, localSha] = (f.up_local ?? "").split(" ");
    assertEquals(Number(size), BLOB_MIB * 1024 * 1024, all);
    assertEquals(f.up_remote, `${size} ${localSha}`, all);
    assertEquals(
      f.parallel,
      `${PARALLEL}/${PARALLEL} open_at_once=${PARALLEL} errors=[]`,
      all,
    );
    for (const key of ["gw22", "gw80", "gw8080", "dns80", "own_private", "own_public"]) {
      assertFastFailure(f, key, 7, all);
    }
    for (const target of ["10.0.2.2:22", "10.0.2.2:80", "10.0.2.2:8080", "10.0.2.3:80"]) {
      assert(r.stderr.includes(`shuru: blocked ${target} (gateway address`), `${target}\n${all}`);
    }
    for (const address of [OWN_PRIVATE, OWN_PUBLIC]) {
      assert(
        r.stderr.includes(`shuru: blocked ${address}:${port} (host's own address`),
        `${address}\n${all}`,
      );
    }
    assertEquals(f.after, `hello from port ${port}`, all);
  },
);

Deno.test(
  "run --allow-net: a guest opening 5000 connections hits the connection limit with one " +
    "shuru line, and the network works after they close",
  async () => {
    await requireTool("curl", "curl");
    await using home = await TestHome.create();
    await using ns = await BlackholeNetns.create();
    await using servers = await HostServers.start(ns, 1, { blobMiB: 1 });
    const port = servers.ports[0]!;
    const url = `http://api.test:${port}`;
    const script = [
      "set -u",
      `python3 - ${port} ${FLOOD} <<'EOF'\n${FLOOD_PY}\nEOF`,
      // The stack forgets a connection once both sides closed it; give that a few seconds.
      `for i in 1 2 3 4 5 6 7 8 9 10; do
         body=$(curl -sS --max-time 10 ${url}/ 2>&1) && break
         sleep 1
       done
       echo "after=$body"
       echo "after_attempts=$i"`,
      `echo "after_blob=$(curl -sS --max-time 60 ${url}/blob | sha256sum | cut -c1-64)"`,
    ].join("\n");
    const r = await runShuru(home, ns, [
      "run",
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
    const f = fields(r.stdout);
    const limit = DEFAULT_LIMITS.maxConnections;
    const open = Number(f.flood_open);
    const refused = Number(f.flood_refused);
    // The guest's DNS lookup and nothing else shares the table: nearly `limit` stay open.
    assert(open <= limit && open >= limit - 8, `open ${open}, limit ${limit}\n${all}`);
    assertEquals(open + refused, FLOOD, all);
    assertEquals(f.flood_other, "{}", all);
    const limitLines = r.stderr.split("\n").filter((l) => l.includes(`(limit ${limit})`));
    assert(limitLines.length >= 1, `no limit line on stderr\n${all}`);
    // Rate-limited (one line per 10 s at most), not one per refused connection.
    const most = Math.ceil(Number(f.flood_seconds) / 10) + 1;
    assert(
      limitLines.length <= most,
      `${limitLines.length} limit lines, expected <= ${most}\n${all}`,
    );
    for (const line of limitLines) {
      assert(
        line.startsWith(`shuru: Cannot open more guest TCP connections: ${limit} open (limit`),
        `${line}\n${all}`,
      );
    }
    assertEquals(f.after, `hello from port ${port}`, all);
    assertEquals(f.after_blob, servers.blobSha256, all);
  },
);
