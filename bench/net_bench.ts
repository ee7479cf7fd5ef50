/**
 * Network stack benchmark: `deno run -A bench/net_bench.ts`.
 *
 * 1. In process, no I/O: bytes through `NetworkStack` as TCP segments, guest→host (upload) and
 *    host→guest (download), at MTU 1500 and 65520, against a Deno loopback TCP copy (the host
 *    socket every relayed connection ends in) measured in the same run.
 * 2. A QEMU microvm guest (TCG, busybox wget/nc) on our stack via `-netdev stream`, against the
 *    same guest on QEMU's slirp (`-netdev user`), same host server, same run: 64 MiB download
 *    and upload at MTU 1500, ours also at 9000, 16384 and 65520 (virtio-net `host_mtu`), and
 *    over the datagram link (`-netdev dgram`, one frame per datagram: a macOS host's link) at
 *    MTU 1500 and the default; and, with a static C helper built by the host's gcc, an upload
 *    not bound by busybox and the p50 of 200 sequential TCP connects, both timed in the guest.
 * 3. As root: the Linux kernel's TCP in a namespace behind a TAP device, through the Relay to a
 *    loopback server, against curl talking to the same server directly.
 *
 * @module
 */

import { NetworkStack, parseIpv4, TcpFlag, type TcpRepr } from "../proxy/mod.ts";
import { guestTcp } from "../proxy/_test_utils.ts";

const MIB = 1024 * 1024;
const DEST = parseIpv4("198.18.0.1");
const GUEST_ISS = 1000;
const STACK_ISS = 5000;

function mibps(bytes: number, ms: number): number {
  return bytes / MIB / (ms / 1000);
}

async function loopbackReference(total: number): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepting = listener.accept();
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const server = await accepting;
  const chunk = new Uint8Array(256 * 1024);
  const started = performance.now();
  const reader = (async () => {
    const buf = new Uint8Array(256 * 1024);
    let got = 0;
    while (got < total) {
      const n = await server.read(buf);
      if (n === null) break;
      got += n;
    }
  })();
  for (let sent = 0; sent < total;) {
    sent += await client.write(chunk.subarray(0, Math.min(chunk.length, total - sent)));
  }
  await reader;
  const ms = performance.now() - started;
  client.close();
  server.close();
  listener.close();
  return mibps(total, ms);
}

const BASE: TcpRepr = {
  sourcePort: 40000,
  destinationPort: 80,
  sequence: GUEST_ISS,
  acknowledgment: 0,
  flags: TcpFlag.SYN,
  window: 65535,
  options: { maxSegmentSize: 65495, windowScale: 7 },
  payload: new Uint8Array(0),
};

function openConnection(mtu: number): { stack: NetworkStack; id: number } {
  const stack = new NetworkStack({ mtu, randomIss: () => STACK_ISS });
  stack.receiveFrame(guestTcp(DEST, BASE), 0);
  const ev = stack.nextEvent();
  if (ev?.type !== "connect") throw new Error("no connect event");
  stack.accept(ev.id);
  stack.dispatch(0, () => true);
  stack.receiveFrame(
    guestTcp(DEST, {
      ...BASE,
      flags: TcpFlag.ACK,
      sequence: GUEST_ISS + 1,
      acknowledgment: STACK_ISS + 1,
      options: {},
    }),
    0,
  );
  while (stack.nextEvent());
  return { stack, id: ev.id };
}

/** Guest → host: pre-built data segments in, `recv` drains, ACKs out. */
function upload(mtu: number, total: number): number {
  const { stack, id } = openConnection(mtu);
  const mss = mtu - 40;
  const frames: Uint8Array[] = [];
  const payload = new Uint8Array(mss).fill(0x5a);
  let seq = GUEST_ISS + 1;
  for (let sent = 0; sent < total; sent += mss) {
    frames.push(guestTcp(DEST, {
      ...BASE,
      flags: TcpFlag.ACK,
      sequence: seq >>> 0,
      acknowledgment: STACK_ISS + 1,
      options: {},
      payload,
    }));
    seq += mss;
  }
  const batch = Math.max(1, Math.floor(128 * 1024 / mss));
  let received = 0;
  const started = performance.now();
  for (let i = 0; i < frames.length; i += batch) {
    const now = performance.now();
    for (let k = i; k < Math.min(frames.length, i + batch); k++) {
      stack.receiveFrame(frames[k]!, now);
    }
    for (;;) {
      const data = stack.recv(id, 1 << 20);
      if (!data || data.length === 0) break;
      received += data.length;
    }
    stack.dispatch(now, () => true);
  }
  const ms = performance.now() - started;
  if (received < total) throw new Error(`upload lost data: ${received} of ${total}`);
  return mibps(received, ms);
}

/** Host → guest: `send` fills the buffer, dispatch emits segments, the guest ACKs each batch. */
function download(mtu: number, total: number): number {
  const { stack, id } = openConnection(mtu);
  const chunk = new Uint8Array(256 * 1024).fill(0xa5);
  let queued = 0;
  let acked = STACK_ISS + 1;
  let delivered = 0;
  const started = performance.now();
  while (delivered < total) {
    const now = performance.now();
    const cap = Math.min(stack.sendCapacity(id), total - queued);
    if (cap > 0) queued += stack.send(id, chunk.subarray(0, Math.min(cap, chunk.length)));
    let end = acked;
    stack.dispatch(now, (f) => {
      // The guest reads sequence number and payload length, as a NIC driver hands them up.
      const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
      const ipTotal = v.getUint16(16);
      const tcpHl = (f[46]! >> 4) * 4;
      const len = ipTotal - 20 - tcpHl;
      const s = v.getUint32(38);
      if (len > 0) {
        delivered += len;
        end = (s + len) >>> 0;
      }
      return true;
    });
    if (end !== acked) {
      acked = end;
      stack.receiveFrame(
        guestTcp(DEST, {
          ...BASE,
          flags: TcpFlag.ACK,
          sequence: GUEST_ISS + 1,
          acknowledgment: acked,
          options: {},
        }),
        now,
      );
    }
  }
  const ms = performance.now() - started;
  return mibps(delivered, ms);
}

async function tapEndToEnd(): Promise<void> {
  const { tapPrerequisite, TapNamespace, TapLink } = await import("../tests/_net_tap.ts");
  const missing = tapPrerequisite();
  if (missing) {
    console.log(`tap end-to-end: skipped (${missing})`);
    return;
  }
  const { Relay } = await import("../proxy/mod.ts");
  const { NetworkPolicy } = await import("../proxy/mod.ts");
  const size = 128 * MIB;
  const payload = new Uint8Array(size).fill(0x42);
  // The server runs in a child process so it does not share the relay's event loop.
  const dir = await Deno.makeTempDir({ prefix: "shuru-netbench-" });
  const serverJs = `${dir}/server.ts`;
  await Deno.writeTextFile(
    serverJs,
    `const payload = new Uint8Array(${size}).fill(0x42);
const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(port) },
  async (req) => {
    if (new URL(req.url).pathname === "/download") return new Response(payload);
    let n = 0;
    for await (const c of req.body!) n += c.length;
    return new Response(String(n));
  });
await s.finished;`,
  );
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", serverJs],
    stdout: "piped",
  }).spawn();
  const reader = server.stdout.getReader();
  const port = Number(new TextDecoder().decode((await reader.read()).value).trim());
  const file = `${dir}/up.bin`;
  await Deno.writeFile(file, payload);
  const curlTime = async (args: string[], ns?: string) => {
    const cmd = ns ? ["ip", "netns", "exec", ns, "curl", ...args] : ["curl", ...args];
    const started = performance.now();
    const out = await new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    return mibps(size, performance.now() - started);
  };
  const down = ["-sS", "-o", "/dev/null"];
  const up = ["-sS", "-o", "/dev/null", "-H", "Expect:", "--data-binary", `@${file}`];
  const directDown = await curlTime([...down, `http://127.0.0.1:${port}/download`]);
  const directUp = await curlTime([...up, `http://127.0.0.1:${port}/upload`]);
  const tap = await TapNamespace.create();
  const relay = new Relay({
    link: new TapLink(tap),
    policy: new NetworkPolicy({ allowHosts: ["api.test"], addHosts: { "api.test": "127.0.0.1" } }),
    resolve: () => Promise.resolve([]),
    dial: ({ hostname, port: p }) => {
      if (hostname !== "127.0.0.1") throw new Error(`bench dialer refuses ${hostname}`);
      return Deno.connect({ hostname, port: p });
    },
    onBlocked: () => {},
  });
  const running = relay.run();
  try {
    await tap.exec(["ip", "addr", "add", "10.0.2.15/24", "dev", tap.name]);
    await tap.exec(["ip", "route", "add", "default", "via", "10.0.2.2"]);
    // The relay's fake pool gives api.test 198.18.0.1 on first lookup; skip DNS with --resolve.
    relay.pool.assign("api.test");
    const res = "--resolve";
    const tapDown = await curlTime([
      ...down,
      res,
      `api.test:${port}:198.18.0.1`,
      `http://api.test:${port}/download`,
    ], tap.netns);
    const tapUp = await curlTime([
      ...up,
      res,
      `api.test:${port}:198.18.0.1`,
      `http://api.test:${port}/upload`,
    ], tap.netns);
    console.log(
      `tap end-to-end (${
        size / MIB
      } MiB, MTU 1500, kernel TCP in a namespace -> relay -> loopback):`,
    );
    console.log(
      `  download ${tapDown.toFixed(0)} MiB/s vs direct loopback curl ${
        directDown.toFixed(0)
      } MiB/s: ${(tapDown / directDown).toFixed(2)}x`,
    );
    console.log(
      `  upload   ${tapUp.toFixed(0)} MiB/s vs direct loopback curl ${directUp.toFixed(0)} MiB/s: ${
        (tapUp / directUp).toFixed(2)
      }x`,
    );
    const c = relay.stack.counters;
    console.log(
      `  frames in ${c.framesIn}, out ${c.framesOut}, internal errors ${c.internalErrors}`,
    );

    // Memory with a slow host reader: the guest uploads 256 MiB to a server reading about
    // 25 MiB/s; the stack's window must hold the guest back instead of buffering.
    const slowSize = 256 * MIB;
    const slowJs = `${dir}/slow.ts`;
    await Deno.writeTextFile(
      slowJs,
      `const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(l.addr.port);
const conn = await l.accept();
const buf = new Uint8Array(64 * 1024);
let got = 0;
while (got < ${slowSize}) {
  const n = await conn.read(buf);
  if (n === null) break;
  got += n;
  await new Promise((r) => setTimeout(r, 2));
}
conn.close();
l.close();`,
    );
    const slow = new Deno.Command(Deno.execPath(), { args: ["run", "-A", slowJs], stdout: "piped" })
      .spawn();
    const slowReader = slow.stdout.getReader();
    const slowPort = Number(new TextDecoder().decode((await slowReader.read()).value).trim());
    slowReader.releaseLock();
    const big = `${dir}/big.bin`;
    {
      using f = await Deno.open(big, { write: true, create: true, truncate: true });
      for (let i = 0; i < slowSize / payload.length; i++) await f.write(payload);
    }
    const rssBefore = Deno.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss), 20);
    const started = performance.now();
    await tap.exec(["sh", "-c", `busybox nc -w 60 198.18.0.1 ${slowPort} < ${big}`], {
      allowFail: true,
    });
    clearInterval(sampler);
    await slow.status;
    await slow.stdout.cancel().catch(() => {});
    const rate = slowSize / MIB / ((performance.now() - started) / 1000);
    console.log(
      `  ${slowSize / MIB} MiB upload to a slow reader (${rate.toFixed(0)} MiB/s): RSS grew ` +
        `${((rssPeak - rssBefore) / MIB).toFixed(1)} MiB (target < 64 MiB)`,
    );
  } finally {
    relay.close();
    await running;
    await tap.close();
    server.kill();
    await server.status;
    reader.releaseLock();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A static guest program (the busybox guest's `cat | nc` upload is bound by busybox, not the
 * network): `netprobe connect IP PORT N` connects N times one after another (closing each at
 * once) and prints the p50 and p90 of connect() in ms; `netprobe send IP PORT FILE` sends the
 * file in the raw upload server's framing (16-digit length, then the bytes) with 256 KiB
 * writes and prints the server's answer and the seconds from connect to answer.
 */
const NETPROBE_C = `
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
int main(int argc, char **argv) {
  if (argc != 5) return 2;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) return 2;
  if (strcmp(argv[1], "connect") == 0) {
    int n = atoi(argv[4]);
    if (n < 1 || n > 100000) return 2;
    double *t = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      double t0 = now_ms();
      if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
      t[i] = now_ms() - t0;
      close(s);
    }
    qsort(t, n, sizeof(double), cmp);
    printf("%.3f %.3f\\n", t[n / 2], t[n * 9 / 10]);
    return 0;
  }
  FILE *f = fopen(argv[4], "rb");
  if (!f) { perror("open"); return 1; }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc(len + 17);
  snprintf(buf, 17, "%016ld", len);
  if (fread(buf + 16, 1, len, f) != (size_t)len) return 1;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  double t0 = now_ms();
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
  for (long off = 0, total = len + 16; off < total;) {
    long chunk = total - off < 262144 ? total - off : 262144;
    ssize_t w = write(s, buf + off, chunk);
    if (w <= 0) { perror("write"); return 1; }
    off += w;
  }
  char answer[256];
  ssize_t got = 0, r;
  while (got < 255 && (r = read(s, answer + got, 255 - got)) > 0) got += r;
  answer[got] = 0;
  answer[strcspn(answer, "\\n")] = 0;
  printf("%s %.3f\\n", answer, (now_ms() - t0) / 1000);
  return 0;
}
`;

/** Builds `netprobe` with the host's gcc (static: the busybox guest has no libc). */
async function buildNetprobe(dir: string): Promise<string | undefined> {
  await Deno.writeTextFile(`${dir}/netprobe.c`, NETPROBE_C);
  try {
    const out = await new Deno.Command("gcc", {
      args: ["-static", "-O2", "-o", `${dir}/netprobe`, `${dir}/netprobe.c`],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return `${dir}/netprobe`;
    console.log(`  netprobe: gcc failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  } catch {
    console.log(
      "  connect latency and fast upload: skipped (need gcc and a static libc: " +
        "apt-get install gcc libc6-dev)",
    );
  }
  return undefined;
}

/** After the transfers: a full-speed upload and CONNECTS sequential connects, timed in C. */
const CONNECTS = 200;
const NETPROBE_SCRIPT = `
if [ -x /bin/netprobe ]; then
  case "$HOST" in
    *[a-z]*) IP=$(nslookup "$HOST" 2>/dev/null | awk '/^Address/ { a = $NF } END { print a }') ;;
    *) IP=$HOST ;;
  esac
  echo "RESULT upload_c $(/bin/netprobe send "$IP" "$RAW" /tmp/up 2>&1)"
  echo "RESULT connect $(/bin/netprobe connect "$IP" "$PORT" ${CONNECTS} 2>&1)"
fi
`;

async function qemuVsSlirp(): Promise<void> {
  const q = await import("../tests/_net_qemu.ts");
  const missing = await q.qemuPrerequisite();
  if (missing) {
    console.log(`qemu: skipped (${missing})`);
    return;
  }
  const {
    Relay,
    NetworkPolicy,
    StreamLink,
    DatagramLink,
    bindDatagramSocket,
    connectDatagramSocket,
  } = await import("../proxy/mod.ts");
  const { DEFAULT_GUEST_MTU } = await import("../runner/mod.ts");
  const size = 64 * MIB;
  const dir = await Deno.makeTempDir({ prefix: "shuru-netbench-qemu-" });
  const server = await q.startServer(dir, size);
  try {
    const netprobe = await buildNetprobe(dir);
    const image = await q.buildGuest(
      dir,
      q.TRANSFER_SCRIPT + NETPROBE_SCRIPT,
      netprobe ? { programs: { netprobe } } : {},
    );
    interface Rates {
      down: number;
      up: number;
      /** Upload by netprobe (not busybox), MiB/s; undefined without gcc. */
      upC: number | undefined;
      /** connect() p50 and p90, ms; undefined without gcc. */
      connect: [number, number] | undefined;
    }
    const rates = (results: Map<string, string>): Rates => {
      const down = results.get("download") ?? "";
      const up = results.get("upload") ?? "";
      if (!down.startsWith(String(size)) || !up.startsWith(`${size} ${server.hash}`)) {
        throw new Error(`transfer failed: download "${down}", upload "${up}"`);
      }
      let connect: [number, number] | undefined;
      let upC: number | undefined;
      if (netprobe) {
        const c = (results.get("connect") ?? "").split(" ").map(Number);
        if (c.length !== 2 || c.some((x) => !Number.isFinite(x))) {
          throw new Error(`connect latency failed: "${results.get("connect")}"`);
        }
        connect = [c[0]!, c[1]!];
        const u = results.get("upload_c") ?? "";
        if (!u.startsWith(`${size} ${server.hash} `)) {
          throw new Error(`netprobe upload failed: "${u}"`);
        }
        upC = size / MIB / Number(u.split(" ")[2]);
      }
      return {
        down: size / MIB / q.guestSeconds(down),
        up: size / MIB / q.guestSeconds(up),
        upC,
        connect,
      };
    };
    const ours = async (mtu: number, transport: "stream" | "dgram"): Promise<Rates> => {
      const sock = `${dir}/net-${transport}-${mtu}.sock`;
      const vmSock = `${dir}/vm-${mtu}.sock`;
      const listener = transport === "stream"
        ? Deno.listen({ transport: "unix", path: sock })
        : undefined;
      const fd = transport === "dgram" ? bindDatagramSocket(sock) : -1;
      const datagram = fd >= 0 ? new DatagramLink(fd) : undefined;
      const abort = new AbortController();
      const link = async () => {
        if (listener) return new StreamLink(await listener.accept());
        await connectDatagramSocket(fd, vmSock, { signal: abort.signal });
        return datagram!;
      };
      const serving = (async () => {
        await new Relay({
          link: await link(),
          stack: { mtu },
          // As `shuru run --allow-net --add-host api.test:127.0.0.1` (no allow-list to sniff).
          policy: new NetworkPolicy({
            allowNet: true,
            addHosts: { "api.test": "127.0.0.1" },
          }),
          resolve: () => Promise.resolve([]),
          dial: ({ hostname, port }) => {
            if (hostname !== "127.0.0.1") throw new Error(`bench dialer refuses ${hostname}`);
            return Deno.connect({ hostname, port });
          },
          onBlocked: () => {},
        }).run();
      })();
      // Event-loop lag of this process (where the relay runs) while the guest transfers: what
      // an agent channel or NBD server sharing the loop would wait.
      const lags: number[] = [];
      let expected = performance.now() + 10;
      const probe = setInterval(() => {
        const now = performance.now();
        lags.push(Math.max(0, now - expected));
        expected = now + 10;
      }, 10);
      const run = await q.runGuest(image, {
        net: transport === "stream"
          ? { kind: "stream", socketPath: sock, mtu }
          : { kind: "dgram", socketPath: sock, vmSocketPath: vmSock, mtu },
        arg: `api.test:${server.port}:${server.rawPort}:transfer`,
      });
      clearInterval(probe);
      // A datagram peer never says it left: end the link once QEMU has exited.
      abort.abort();
      datagram?.close();
      await serving;
      listener?.close();
      lags.sort((a, b) => a - b);
      const pct = (p: number) => lags[Math.min(lags.length - 1, Math.floor(lags.length * p))] ?? 0;
      console.log(
        `  event-loop lag during the ${transport} MTU ${mtu} run: p50 ${pct(0.5).toFixed(1)} ms, ` +
          `p99 ${pct(0.99).toFixed(1)} ms, max ${pct(1).toFixed(1)} ms (${lags.length} samples)`,
      );
      return rates(run.results);
    };
    const slirpRun = await q.runGuest(image, {
      net: { kind: "slirp" },
      arg: `10.0.2.2:${server.port}:${server.rawPort}:transfer`,
    });
    const slirp = rates(slirpRun.results);
    const mtus = [...new Set([1500, 9000, 16384, 65520, DEFAULT_GUEST_MTU])];
    const measured: Array<[number, "stream" | "dgram", Rates]> = [];
    // Stream and datagram interleaved at the MTUs both run, so load changes hit both alike.
    for (const mtu of mtus) {
      measured.push([mtu, "stream", await ours(mtu, "stream")]);
      if (mtu === 1500 || mtu === DEFAULT_GUEST_MTU) {
        measured.push([mtu, "dgram", await ours(mtu, "dgram")]);
      }
    }
    const extraText = (r: Rates) =>
      r.connect && r.upC !== undefined
        ? `, upload (C) ${r.upC.toFixed(1)} MiB/s, connect p50 ${r.connect[0].toFixed(2)} ms ` +
          `(p90 ${r.connect[1].toFixed(2)})`
        : "";
    console.log(
      `qemu guest (TCG, busybox wget download, cat|nc upload, ${size / MIB} MiB, guest clock; ` +
        `upload (C) and ${CONNECTS} sequential connects timed by a static C helper):`,
    );
    console.log(
      `  slirp MTU 1500:  download ${slirp.down.toFixed(1)} MiB/s, upload ${
        slirp.up.toFixed(1)
      } MiB/s${extraText(slirp)}`,
    );
    for (const [mtu, transport, r] of measured) {
      const link = transport === "stream" ? "stream link" : "datagram link";
      const label = `ours, ${link}, MTU ${mtu}${mtu === DEFAULT_GUEST_MTU ? " (default)" : ""}:`;
      const vs = r.connect && slirp.connect && r.upC !== undefined && slirp.upC !== undefined
        ? ` → upload (C) ${(r.upC / slirp.upC).toFixed(2)}x slirp, connect p50 ${
          (r.connect[0] / slirp.connect[0]).toFixed(2)
        }x slirp`
        : "";
      console.log(
        `  ${label} download ${r.down.toFixed(1)} MiB/s (${
          (r.down / slirp.down).toFixed(2)
        }x slirp), upload ${r.up.toFixed(1)} MiB/s (${(r.up / slirp.up).toFixed(2)}x slirp)${
          extraText(r)
        }${vs}`,
      );
    }
    for (const [mtu, transport, r] of measured) {
      if (transport !== "dgram") continue;
      const s = measured.find(([m, t]) => m === mtu && t === "stream")![2];
      console.log(
        `  datagram vs stream link, MTU ${mtu}: download ${(r.down / s.down).toFixed(2)}x, ` +
          `upload ${(r.up / s.up).toFixed(2)}x` +
          (r.upC !== undefined && s.upC !== undefined
            ? `, upload (C) ${(r.upC / s.upC).toFixed(2)}x`
            : ""),
      );
    }
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

// `deno run -A bench/net_bench.ts [stack] [qemu] [tap]` runs a subset.
const sections = Deno.args.length > 0 ? Deno.args : ["stack", "qemu", "tap"];
if (sections.includes("stack")) {
  const total = 256 * MIB;
  const reference = await loopbackReference(total);
  console.log(`reference: Deno loopback TCP copy ${reference.toFixed(0)} MiB/s`);
  for (const mtu of [1500, 65520]) {
    const up = upload(mtu, mtu === 1500 ? 128 * MIB : total);
    const down = download(mtu, mtu === 1500 ? 128 * MIB : total);
    console.log(
      `stack in process, MTU ${mtu}: upload ${up.toFixed(0)} MiB/s (${
        (up / reference).toFixed(2)
      }x loopback), ` +
        `download ${down.toFixed(0)} MiB/s (${(down / reference).toFixed(2)}x loopback)`,
    );
  }
}
if (sections.includes("qemu")) await qemuVsSlirp();
if (sections.includes("tap")) await tapEndToEnd();
