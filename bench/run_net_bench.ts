/**
 * The guest network as `shuru run --allow-net` wires it (bootSandbox + GuestNetwork in one
 * process, with the NBD server and the agent channel), at several MTUs: guest curl download and
 * upload through our stack to a host server on 127.0.0.1 (`--add-host api.test:127.0.0.1`), and
 * TCP connect latency (python3 in the guest, 200 sequential connects). MTU 1500 is the
 * reference (same run, same guest image); the default MTU (`DEFAULT_GUEST_MTU`) was picked from
 * these numbers. With the default MTU it also measures the agent's `exec true` latency during a
 * download against idle.
 *
 * Usage: deno run -A bench/run_net_bench.ts [MiB] [MTU...]   (default: 64 1500 9000 16384 65520;
 * SHURU_ACCEL defaults to tcg here). Each MTU boots one guest and runs every transfer 3 times
 * (median reported); boots run one after another, never two at once.
 *
 * @module
 */

import { join } from "node:path";
import { homeLayout } from "../cli/home.ts";
import { bootSandbox, DEFAULT_GUEST_MTU } from "../runner/mod.ts";
import type { Sandbox } from "../sandbox/mod.ts";
import { parseAccel } from "../vm/mod.ts";
import { quantile } from "./_stats.ts";

const MIB = Number(Deno.args[0] ?? 64);
const MTUS = Deno.args.length > 1 ? Deno.args.slice(1).map(Number) : [1500, 9000, 16384, 65520];
if (!MTUS.includes(1500)) MTUS.unshift(1500);
const REPEAT = 3;
const CONNECTS = 200;
const SERVER = new URL("../tests/_net_http_server.ts", import.meta.url).pathname;
const accel = parseAccel(Deno.env.get("SHURU_ACCEL") ?? "tcg");

/** Guest python: CONNECTS sequential connects to api.test:PORT; prints p50 and p90 in ms. */
const CONNECT_PY = `
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
addr = socket.getaddrinfo("api.test", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
ts = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t0 = time.perf_counter()
    s.connect(addr)
    ts.append((time.perf_counter() - t0) * 1000)
    s.close()
ts.sort()
print(f"{ts[len(ts) // 2]:.3f} {ts[int(len(ts) * 0.9)]:.3f}")
`;

async function guestText(sb: Sandbox, script: string): Promise<string> {
  const out = await sb.exec(["sh", "-c", script]);
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `guest script failed (${out.exitCode}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text.trim();
}

interface MtuResult {
  mtu: number;
  guestMtu: string;
  down: number;
  up: number;
  connectP50: number;
  connectP90: number;
}

const server = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "--quiet", SERVER, "1", String(MIB)],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
let first = "";
while (!first.includes("\n")) {
  const { value, done } = await reader.read();
  if (done) throw new Error("the bench HTTP server did not start");
  first += value;
}
reader.releaseLock();
const { ports } = JSON.parse(first.split("\n")[0]!) as { ports: number[] };
const port = ports[0]!;
const url = `http://api.test:${port}`;

const root = await Deno.makeTempDir({ prefix: "shuru-net-bench-" });
const shared = homeLayout();
const home = {
  root,
  store: join(root, "store"),
  assets: shared.assets,
  instances: join(root, "instances"),
  images: join(root, "images"),
};

async function measure(mtu: number): Promise<MtuResult> {
  const booted = await bootSandbox({
    home,
    cpus: 2,
    memoryMiB: 2048,
    diskSizeMiB: 4096,
    accel,
    network: { allowNet: true, addHosts: { "api.test": "127.0.0.1" }, mtu },
  });
  try {
    const sb = booted.sandbox;
    const guestMtu = await guestText(sb, "cat /sys/class/net/eth0/mtu");
    await guestText(sb, `head -c ${MIB}M /dev/zero > /tmp/up`);
    const downs: number[] = [];
    const ups: number[] = [];
    for (let i = 0; i < REPEAT; i++) {
      // curl's own timer (guest clock): bytes / seconds of the transfer.
      downs.push(
        Number(await guestText(sb, `curl -sS -o /dev/null -w '%{speed_download}' ${url}/blob`)) /
          1048576,
      );
      ups.push(
        Number(
          await guestText(
            sb,
            `curl -sS -o /dev/null -w '%{speed_upload}' --data-binary @/tmp/up ${url}/upload`,
          ),
        ) / 1048576,
      );
    }
    const [p50, p90] = (await guestText(
      sb,
      `python3 - ${port} ${CONNECTS} <<'EOF'\n${CONNECT_PY}\nEOF`,
    )).split(" ").map(Number);
    if (mtu === DEFAULT_GUEST_MTU) await execLatency(sb);
    const counters = booted.network?.relay?.stack.counters;
    if (counters && counters.internalErrors > 0) {
      throw new Error(`MTU ${mtu}: ${counters.internalErrors} internal stack errors`);
    }
    return {
      mtu,
      guestMtu,
      down: quantile(downs, 0.5),
      up: quantile(ups, 0.5),
      connectP50: p50!,
      connectP90: p90!,
    };
  } finally {
    await booted.stop();
  }
}

/** The agent's `exec true` latency, idle (reference) and during a download. */
async function execLatency(sb: Sandbox): Promise<void> {
  const execTrue = async () => {
    const t0 = performance.now();
    await sb.exec(["true"]);
    return performance.now() - t0;
  };
  const idle: number[] = [];
  for (let i = 0; i < 20; i++) idle.push(await execTrue());
  const download = sb.exec(["sh", "-c", `curl -sS -o /dev/null ${url}/blob`]);
  let downloading = true;
  const busy: number[] = [];
  const probes = (async () => {
    while (downloading) busy.push(await execTrue());
  })();
  await download;
  downloading = false;
  await probes;
  console.log(
    `  MTU ${DEFAULT_GUEST_MTU}: exec true idle p50 ${quantile(idle, 0.5).toFixed(0)} ms, ` +
      `p99 ${quantile(idle, 0.99).toFixed(0)} ms (reference); during a download ` +
      `(${busy.length} samples) p50 ${quantile(busy, 0.5).toFixed(0)} ms, p99 ${
        quantile(busy, 0.99).toFixed(0)
      } ms → ${(quantile(busy, 0.5) / quantile(idle, 0.5)).toFixed(2)}x idle p50`,
  );
}

try {
  console.log(
    `run --allow-net, accel ${accel}, ${MIB} MiB each way, median of ${REPEAT}, ` +
      `default MTU ${DEFAULT_GUEST_MTU}:`,
  );
  const results: MtuResult[] = [];
  for (const mtu of MTUS) results.push(await measure(mtu));
  const ref = results.find((r) => r.mtu === 1500)!;
  for (const r of results) {
    console.log(
      `  MTU ${String(r.mtu).padStart(5)} (guest ${r.guestMtu}): download ${
        r.down.toFixed(1)
      } MiB/s (${(r.down / ref.down).toFixed(2)}x MTU 1500), upload ${r.up.toFixed(1)} MiB/s (${
        (r.up / ref.up).toFixed(2)
      }x), connect p50 ${r.connectP50.toFixed(2)} ms, p90 ${r.connectP90.toFixed(2)} ms`,
    );
  }
} finally {
  server.kill("SIGKILL");
  await server.status;
  await server.stdout.cancel().catch(() => {});
  await Deno.remove(root, { recursive: true }).catch(() => {});
}
