/**
 * Bulk transfers through the real guest agent: 100 MiB of process output read slowly while the
 * agent's and this process's memory are measured (flow control must bound both), and 200 MiB
 * file round trips compared by hash.
 */

import { createBLAKE3 } from "hash-wasm";
import { assert, assertEquals } from "./_assert.ts";
import { startAgent } from "./_agent_fixture.ts";

const MiB = 1024 * 1024;

Deno.test("agent: 100 MiB of output with a slow reader keeps both ends' memory bounded", async () => {
  await using agent = await startAgent();
  const total = 100 * MiB;
  // The host side runs in its own process so its RSS is not mixed with other test files'.
  const reader = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      new URL("./_agent_slow_reader.ts", import.meta.url).pathname,
      agent.socket,
      String(total),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Sample the agent's RSS while the host reads (the warm-up exec comes first).
  await new Promise((r) => setTimeout(r, 300));
  const agentBase = await agent.rss();
  let agentPeak = agentBase;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      agentPeak = Math.max(agentPeak, await agent.rss());
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const out = await reader.output();
  sampling = false;
  await sampler;
  assertEquals(out.code, 0, "slow reader failed");
  const host = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(host.got, total);
  assertEquals(host.exitCode, 0);
  const agentGrowth = (agentPeak - agentBase) / MiB;
  const hostGrowth = (host.peak - host.base) / MiB;
  console.log(
    `RSS growth during 100 MiB: agent ${agentGrowth.toFixed(1)} MiB ` +
      `(base ${(agentBase / MiB).toFixed(0)}), host ${hostGrowth.toFixed(1)} MiB ` +
      `(base ${(host.base / MiB).toFixed(0)})`,
  );
  // Unbounded buffering would grow by ~100 MiB during the stall alone; the windows allow a few
  // MiB plus GC slack (garbage chunks awaiting collection).
  assert(agentGrowth < 64, `agent RSS grew by ${agentGrowth.toFixed(1)} MiB`);
  assert(hostGrowth < 64, `host RSS grew by ${hostGrowth.toFixed(1)} MiB`);
});

/** A deterministic pseudo-random stream of `size` bytes, hashed as it is produced. */
function generated(size: number, seed: number, hash: { update(b: Uint8Array): unknown }) {
  let sent = 0;
  let x = seed >>> 0 || 1;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= size) {
        controller.close();
        return;
      }
      const n = Math.min(MiB, size - sent);
      const chunk = new Uint8Array(n);
      const words = new Uint32Array(chunk.buffer, 0, n >>> 2);
      for (let i = 0; i < words.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        words[i] = x;
      }
      for (let i = words.length * 4; i < n; i++) chunk[i] = i & 0xff;
      hash.update(chunk);
      sent += n;
      controller.enqueue(chunk);
    },
  });
}

async function hashStream(readable: ReadableStream<Uint8Array>): Promise<[string, number]> {
  const h = await createBLAKE3();
  let n = 0;
  for await (const c of readable) {
    h.update(c);
    n += c.length;
  }
  return [h.digest("hex"), n];
}

Deno.test("agent: file round trip of 200 MiB with hashes compared", async () => {
  await using agent = await startAgent();
  await using sb = await agent.connect();
  const size = 200 * MiB;
  const path = `${agent.dir}/big.bin`;
  const sent = await createBLAKE3();
  const written = await sb.writeFile(path, generated(size, 12345, sent));
  assertEquals(written, size);
  const want = sent.digest("hex");
  // The bytes on disk (read without the agent) and the bytes read back through it.
  using file = await Deno.open(path);
  assertEquals(await hashStream(file.readable), [want, size]);
  assertEquals(await hashStream(sb.readFile(path)), [want, size]);
  // A ranged read in the middle.
  const [, n] = await hashStream(sb.readFile(path, { offset: 100 * MiB + 7, length: 3 * MiB }));
  assertEquals(n, 3 * MiB);
});
