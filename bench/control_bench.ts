/**
 * Control protocol benchmarks, each against references measured in the same run (a REAL guest
 * agent on this host, with the control server on a real control socket):
 *
 * 1. exec `true` round trip: through the control socket (raw JSON-RPC), through the SDK
 *    (`Sandbox.exec`), vs the agent-level figure (`sandbox/` `Sandbox.exec` on the agent socket)
 *    and vs `Deno.Command` on the host. p50/p99 and the control overhead over the agent.
 * 2. A file written and read through the protocol in chunks (SDK `fs.writeFile`/`readFile`) vs
 *    the agent-level `writeFile`/`readBytes` of the same bytes.
 *
 * Live checkpoint figures (guest pause, save time after 64 MiB dirty on a 4 GiB disk) need the
 * supervisor and a VM; they belong to the lead's end-to-end bench.
 *
 * Run: `deno run -A bench/control_bench.ts [--iterations N] [--size-mib N]`.
 *
 * @module
 */

import { connectControl } from "../control/mod.ts";
import { startControl } from "../tests/_control_fixture.ts";
import { Sandbox } from "../mod.ts";
import { quantile } from "./_stats.ts";

const MiB = 1024 * 1024;

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const ITER = arg("--iterations", 300);
const SIZE = arg("--size-mib", 128) * MiB;

function summary(samples: number[]): { p50: number; p99: number } {
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) };
}

const fmt = (x: number) => x.toFixed(2);

if (import.meta.main) {
  await using f = await startControl();
  await using sdk = await Sandbox.connect(`unix:${f.controlSocket}`);
  await using raw = await connectControl(f.controlSocket);

  // Interleaved, one call of each per round, so load changes on the machine hit all alike.
  const methods: Array<[string, () => Promise<void>]> = [
    ["host Deno.Command", async () => {
      await new Deno.Command("true").output();
    }],
    ["agent (sandbox/)", async () => {
      if ((await f.agent.exec(["true"])).exitCode !== 0) throw new Error("true failed");
    }],
    ["control socket", async () => {
      const r = await raw.request<{ exit_code: number }>("exec", { argv: ["true"] });
      if (r.exit_code !== 0) throw new Error("true failed");
    }],
    ["SDK", async () => {
      if ((await sdk.exec(["true"])).exitCode !== 0) throw new Error("true failed");
    }],
  ];
  const samples = methods.map(() => [] as number[]);
  for (let round = -20; round < ITER; round++) {
    for (let m = 0; m < methods.length; m++) {
      const t0 = performance.now();
      await methods[m]![1]();
      if (round >= 0) samples[m]!.push(performance.now() - t0);
    }
  }
  const [host, agent, control, viaSdk] = samples.map(summary) as [
    ReturnType<typeof summary>,
    ReturnType<typeof summary>,
    ReturnType<typeof summary>,
    ReturnType<typeof summary>,
  ];
  console.log(`exec true round trip, ${ITER} iterations (ms):`);
  for (
    const [name, s] of [
      ["host Deno.Command", host],
      ["agent (sandbox/)", agent],
      ["control socket", control],
      ["SDK", viaSdk],
    ] as const
  ) {
    console.log(`  ${name.padEnd(18)} p50 ${fmt(s.p50)}  p99 ${fmt(s.p99)}`);
  }
  console.log(
    `  control overhead over agent: p50 +${fmt(control.p50 - agent.p50)} ms ` +
      `(x${fmt(control.p50 / agent.p50)}), SDK +${fmt(viaSdk.p50 - agent.p50)} ms ` +
      `(x${fmt(viaSdk.p50 / agent.p50)})`,
  );

  const data = crypto.getRandomValues(new Uint8Array(64 * 1024));
  const big = new Uint8Array(SIZE);
  for (let o = 0; o < SIZE; o += data.length) big.set(data, o);
  const mibs = (ms: number) => (SIZE / MiB) / (ms / 1000);
  let t0 = performance.now();
  await f.agent.writeFile(`${f.dir}/agent.bin`, big);
  const agentWrite = performance.now() - t0;
  t0 = performance.now();
  const back = await f.agent.readBytes(`${f.dir}/agent.bin`);
  const agentRead = performance.now() - t0;
  if (back.length !== SIZE) throw new Error("agent read short");
  t0 = performance.now();
  await sdk.fs.writeFile(`${f.dir}/control.bin`, big);
  const controlWrite = performance.now() - t0;
  t0 = performance.now();
  const back2 = await sdk.fs.readFile(`${f.dir}/control.bin`);
  const controlRead = performance.now() - t0;
  if (back2.length !== SIZE) throw new Error("control read short");
  console.log(`file of ${SIZE / MiB} MiB (MiB/s):`);
  console.log(
    `  write: agent ${fmt(mibs(agentWrite))}, control ${fmt(mibs(controlWrite))} ` +
      `(x${fmt(agentWrite / controlWrite)} of agent)`,
  );
  console.log(
    `  read:  agent ${fmt(mibs(agentRead))}, control ${fmt(mibs(controlRead))} ` +
      `(x${fmt(agentRead / controlRead)} of agent)`,
  );
}
