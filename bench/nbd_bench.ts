/**
 * NBD server benchmark: our `NbdServer` + `FileBackend` vs `qemu-nbd` serving the same raw file,
 * measured in the same run with the same clients.
 *
 * - sequential read: `nbdcopy URI null:` (whole image)
 * - sequential write: `nbdcopy SRC.raw URI` (whole image)
 * - 4 KiB scattered reads: `qemu-img bench -s 4096 -S STEP -d 32` (STEP is an odd number of
 *   4 KiB blocks, so offsets visit the image in a scattered permutation; qemu-img bench has no
 *   true random mode)
 *
 * Each case runs with 1 connection and with 4 (nbdcopy --connections; both servers advertise
 * CAN_MULTI_CONN: qemu-nbd with `-e 4`). qemu-nbd runs with `--cache=writeback` (page cache,
 * as our FileBackend uses). Each number is the median of RUNS runs. Target: sequential read
 * ≥ 0.8× qemu-nbd.
 *
 * Printed per case: median throughput of each server, the median of per-run ratios
 * (ours/qemu-nbd, runs alternate which server goes first), and the ratio of server CPU time
 * (user + system, from /proc) spent on the same work, which other load on the machine disturbs
 * much less than wall-clock throughput.
 *
 * Run: `deno run -A bench/nbd_bench.ts [--size-mib 512] [--runs 5]`
 *
 * @module
 */

import { FileBackend, NbdServer } from "../nbd/mod.ts";
import { median } from "./_stats.ts";

const args = parseArgs(Deno.args);
const SIZE = args.sizeMib * 1024 * 1024;
const RUNS = args.runs;

function parseArgs(argv: string[]): { sizeMib: number; runs: number } {
  const out = { sizeMib: 512, runs: 5 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--size-mib") out.sizeMib = Number(argv[++i]);
    else if (argv[i] === "--runs") out.runs = Number(argv[++i]);
  }
  return out;
}

async function requireTool(name: string): Promise<void> {
  try {
    await new Deno.Command(name, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
  } catch {
    throw new Error(
      `Cannot run the NBD benchmark: ${name} is missing (apt-get install qemu-utils libnbd-bin)`,
    );
  }
}

async function run(cmd: string, argv: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `Cannot run ${cmd} ${argv.join(" ")}: exit ${out.code}: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

async function timed(cmd: string, argv: string[]): Promise<number> {
  const t0 = performance.now();
  await run(cmd, argv);
  return (performance.now() - t0) / 1000;
}

/** Writes `size` bytes of incompressible, non-zero data. */
async function makeImage(path: string, size: number): Promise<void> {
  const chunk = new Uint8Array(1024 * 1024);
  for (let o = 0; o < chunk.length; o += 65536) {
    crypto.getRandomValues(chunk.subarray(o, o + 65536));
  }
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  for (let o = 0; o < size; o += chunk.length) {
    chunk[0] = (o / chunk.length) & 0xff; // vary blocks a little
    let w = 0;
    while (w < chunk.length) w += await f.write(chunk.subarray(w));
  }
}

async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await Deno.lstat(path)).isSocket) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`Cannot reach ${path}: qemu-nbd did not create it`);
}

interface Server {
  uri: string;
  /** CPU seconds (user + system) the server process has used so far. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** utime + stime of a process from /proc (Linux), in seconds. */
function procCpuSeconds(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function startOurs(dir: string, image: string, readOnly: boolean): Promise<Server> {
  const socketPath = `${dir}/ours.sock`;
  const backend = await FileBackend.open(image, { readOnly });
  const server = await NbdServer.listen(backend, { socketPath });
  return {
    uri: `nbd+unix:///?socket=${socketPath}`,
    // In-process: the bench itself only waits for the client while measuring.
    cpuSeconds: () => procCpuSeconds("self"),
    stop: async () => {
      await server.close();
      await backend.close();
    },
  };
}

async function startQemu(dir: string, image: string, readOnly: boolean): Promise<Server> {
  const socketPath = `${dir}/qemu.sock`;
  const child = new Deno.Command("qemu-nbd", {
    args: [
      "-k",
      socketPath,
      "-f",
      "raw",
      "--cache=writeback",
      "-t",
      "-e",
      "4",
      ...(readOnly ? ["-r"] : []),
      image,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitForSocket(socketPath);
  return {
    uri: `nbd+unix:///?socket=${socketPath}`,
    cpuSeconds: () => procCpuSeconds(child.pid),
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(socketPath).catch(() => {});
    },
  };
}

type Case = {
  name: string;
  unit: "MiB/s" | "IOPS";
  readOnly: boolean;
  measure: (uri: string) => Promise<number>;
};

const STEP_BLOCKS = 12289; // odd: coprime with any power-of-two block count
const RANDOM_COUNT = 100_000;

function cases(src: string): Case[] {
  const mib = SIZE / (1024 * 1024);
  const out: Case[] = [];
  for (const conns of [1, 4]) {
    out.push({
      name: `sequential read, ${conns} conn (nbdcopy → null:)`,
      unit: "MiB/s",
      readOnly: true,
      measure: async (uri) =>
        mib / await timed("nbdcopy", [`--connections=${conns}`, uri, "null:"]),
    });
    out.push({
      name: `sequential write, ${conns} conn (nbdcopy file → nbd)`,
      unit: "MiB/s",
      readOnly: false,
      measure: async (uri) =>
        mib / await timed("nbdcopy", [`--connections=${conns}`, "--flush", src, uri]),
    });
  }
  out.push({
    name: "4 KiB scattered read, depth 32 (qemu-img bench)",
    unit: "IOPS",
    readOnly: true,
    measure: async (uri) =>
      RANDOM_COUNT / await timed("qemu-img", [
        "bench",
        "-f",
        "raw",
        "-c",
        String(RANDOM_COUNT),
        "-d",
        "32",
        "-s",
        "4096",
        "-S",
        String(STEP_BLOCKS * 4096),
        uri,
      ]),
  });
  return out;
}

/** Runs the benchmark and prints one line per case with the ratio ours/qemu-nbd. */
export async function main(): Promise<void> {
  for (const t of ["nbdcopy", "qemu-img", "qemu-nbd"]) await requireTool(t);
  const dir = await Deno.makeTempDir({ prefix: "shuru-nbd-bench-" });
  try {
    const src = `${dir}/src.raw`;
    const image = `${dir}/image.raw`;
    console.log(`nbd bench: ${SIZE / 2 ** 20} MiB raw image, median of ${RUNS} runs`);
    await makeImage(src, SIZE);
    await Deno.copyFile(src, image);
    const results: { name: string; ours: number; qemu: number; pairRatio: number }[] = [];
    for (const c of cases(src)) {
      const ours: number[] = [];
      const qemu: number[] = [];
      const cpu = { ours: 0, qemu: 0 };
      const ratios: number[] = [];
      // Alternate servers (and which goes first) run by run, so drift from other load on the
      // machine hits both alike; the median of per-pair ratios is the least noisy figure.
      for (let i = 0; i < RUNS; i++) {
        const order = i % 2 === 0 ? ["ours", "qemu"] as const : ["qemu", "ours"] as const;
        const pair: Record<string, number> = {};
        for (const which of order) {
          const server = which === "ours"
            ? await startOurs(dir, image, c.readOnly)
            : await startQemu(dir, image, c.readOnly);
          try {
            const before = server.cpuSeconds();
            const v = await c.measure(server.uri);
            cpu[which] += server.cpuSeconds() - before;
            pair[which] = v;
            (which === "ours" ? ours : qemu).push(v);
          } finally {
            await server.stop();
          }
        }
        ratios.push(pair.ours! / pair.qemu!);
      }
      const r = {
        name: c.name,
        ours: median(ours),
        qemu: median(qemu),
        pairRatio: median(ratios),
      };
      results.push(r);
      console.log(
        `${r.name.padEnd(50)} ours ${r.ours.toFixed(0).padStart(6)} ${c.unit}  ` +
          `qemu-nbd ${r.qemu.toFixed(0).padStart(6)} ${c.unit}  ratio ${
            r.pairRatio.toFixed(2)
          }  server CPU ours/qemu ${(cpu.ours / cpu.qemu).toFixed(2)}`,
      );
    }
    const seq = results.filter((r) => r.name.startsWith("sequential read"));
    const worst = Math.min(...seq.map((r) => r.pairRatio));
    console.log(
      `target sequential read ≥ 0.80× qemu-nbd: worst ratio ${worst.toFixed(2)} ${
        worst >= 0.8 ? "(met)" : "(NOT met)"
      }`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
