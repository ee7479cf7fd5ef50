/**
 * The guest network as `shuru run --allow-net` wires it (bootSandbox + GuestNetwork in one
 * process, with the NBD server and the agent channel): guest curl download and upload through
 * our stack to a host server on 127.0.0.1 (`--add-host api.test:127.0.0.1`), and the agent's
 * `exec true` latency during the download against idle (the reference, same run, same guest).
 *
 * Usage: deno run -A bench/run_net_bench.ts [MiB]   (SHURU_ACCEL defaults to tcg here)
 *
 * @module
 */

import { join } from "node:path";
import { homeLayout } from "../cli/home.ts";
import { bootSandbox } from "../runner/mod.ts";
import { parseAccel } from "../vm/mod.ts";

const MIB = Number(Deno.args[0] ?? 64);
const SERVER = new URL("../tests/_net_http_server.ts", import.meta.url).pathname;
const accel = parseAccel(Deno.env.get("SHURU_ACCEL") ?? "tcg");

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * q))]! : NaN;
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
const url = `http://api.test:${ports[0]}`;

const root = await Deno.makeTempDir({ prefix: "shuru-net-bench-" });
const shared = homeLayout();
const home = {
  root,
  store: join(root, "store"),
  assets: shared.assets,
  instances: join(root, "instances"),
};
const booted = await bootSandbox({
  home,
  cpus: 2,
  memoryMiB: 2048,
  diskSizeMiB: 4096,
  accel,
  network: { allowNet: true, addHosts: { "api.test": "127.0.0.1" } },
});
try {
  const sb = booted.sandbox;
  const execTrue = async () => {
    const t0 = performance.now();
    await sb.exec(["true"]);
    return performance.now() - t0;
  };
  const idle: number[] = [];
  for (let i = 0; i < 20; i++) idle.push(await execTrue());

  // curl's own timer (guest clock): bytes / seconds of the transfer.
  const download = sb.exec([
    "sh",
    "-c",
    `curl -sS -o /dev/null -w '%{speed_download}' ${url}/blob`,
  ]);
  let downloading = true;
  const busy: number[] = [];
  const probes = (async () => {
    while (downloading) busy.push(await execTrue());
  })();
  const down = await download;
  downloading = false;
  await probes;
  const downMiBs = Number(new TextDecoder().decode(down.stdout)) / 1048576;

  await sb.exec(["sh", "-c", `head -c ${MIB}M /dev/zero > /tmp/up`]);
  const up = await sb.exec([
    "sh",
    "-c",
    `curl -sS -o /dev/null -w '%{speed_upload}' --data-binary @/tmp/up ${url}/upload`,
  ]);
  const upMiBs = Number(new TextDecoder().decode(up.stdout)) / 1048576;

  const counters = booted.network?.relay?.stack.counters;
  console.log(`run --allow-net, ${MIB} MiB each way, accel ${accel}, MTU 1500:`);
  console.log(`  download ${downMiBs.toFixed(1)} MiB/s, upload ${upMiBs.toFixed(1)} MiB/s`);
  console.log(
    `  exec true idle: p50 ${quantile(idle, 0.5).toFixed(0)} ms, p99 ${
      quantile(idle, 0.99).toFixed(0)
    } ms (reference)`,
  );
  console.log(
    `  exec true during download (${busy.length} samples): p50 ${
      quantile(busy, 0.5).toFixed(0)
    } ms, p99 ${quantile(busy, 0.99).toFixed(0)} ms → ${
      (quantile(busy, 0.5) / quantile(idle, 0.5)).toFixed(2)
    }x idle p50`,
  );
  if (counters) {
    console.log(
      `  stack: ${counters.tcpConnections} connections, internal errors ${counters.internalErrors}`,
    );
  }
} finally {
  await booted.stop();
  server.kill("SIGKILL");
  await server.status;
  await server.stdout.cancel().catch(() => {});
  await Deno.remove(root, { recursive: true }).catch(() => {});
}
