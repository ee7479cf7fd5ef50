/**
 * Subprocess for tests/agent_stream_test.ts: connects to an agent, reads `head -c SIZE
 * /dev/zero` slowly (after a full stall), and prints JSON with the byte count and this
 * process's RSS before and at peak. Runs alone so its RSS is the host side's and nothing else
 * (`deno test --parallel` shares one process between test files).
 *
 * Usage: deno run -A tests/_agent_slow_reader.ts SOCKET SIZE
 *
 * @module
 */

import { AgentConnection } from "../agent/mod.ts";

const [socket, sizeArg] = Deno.args;
const size = Number(sizeArg);
await using sb = await AgentConnection.connectUnix(socket!);
// Warm up so the baseline includes JIT and buffers.
await sb.exec(["head", "-c", String(4 * 1024 * 1024), "/dev/zero"]);
const base = Deno.memoryUsage().rss;
let peak = base;
const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 10);
const proc = sb.spawn(["head", "-c", String(size), "/dev/zero"]);
const reader = proc.stdout.getReader();
await new Promise((r) => setTimeout(r, 1000)); // stall: the producer must block, not buffer
let got = 0;
let reads = 0;
while (true) {
  const { value, done } = await reader.read();
  if (done) break;
  got += value.length;
  if (++reads % 4 === 0) await new Promise((r) => setTimeout(r, 1)); // a slow consumer
}
const status = await proc.wait();
clearInterval(sampler);
console.log(JSON.stringify({ got, exitCode: status.exitCode, base, peak }));
