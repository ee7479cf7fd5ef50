/**
 * Kept processes and detach through the real guest agent (`guest/main.ts --listen`, a
 * subprocess): a kept process survives the end of its session, its output is buffered, a detached
 * `AgentConnection` continues over a new connection with one unbroken stream, and a new host
 * finds the process listed and attaches to it.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startAgent, text } from "./_agent_fixture.ts";
import { ConnectionError, type KeptAgentProcess } from "../agent/mod.ts";

const enc = new TextEncoder();

/** Reads `reader` until the text read so far matches `pattern` (with a deadline). */
async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  pattern: RegExp,
  sofar: { text: string },
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  const dec = new TextDecoder();
  while (!pattern.test(sofar.text)) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ${pattern} in ${JSON.stringify(sofar.text)}`)),
        Math.max(0, deadline - Date.now()),
      );
    });
    const { value, done } = await Promise.race([reader.read(), late]).finally(() =>
      clearTimeout(timer)
    );
    if (done) throw new Error(`ended before ${pattern}: ${JSON.stringify(sofar.text)}`);
    sofar.text += dec.decode(value, { stream: true });
  }
}

const SUM = "i=0; while read l; do i=$((i+l)); echo sum=$i; done; echo bye; exit 4";

Deno.test("kept - a detached connection continues over a new one: state, stdin, unbroken output", async () => {
  await using agent = await startAgent();
  await using host = await agent.connect();
  const summer = host.spawn(["sh", "-c", SUM], { stdin: "piped", keep: true, label: "p1" });
  const ticker = host.spawn(
    ["sh", "-c", "n=0; while [ $n -lt 40 ]; do n=$((n+1)); echo tick$n; sleep 0.05; done"],
    { keep: true },
  );
  const plain = host.spawn(["sleep", "30"]);
  const sumOut = summer.stdout.getReader();
  const sumText = { text: "" };
  const stdin = summer.stdin.getWriter();
  await stdin.write(enc.encode("5\n"));
  await readUntil(sumOut, /sum=5\n/, sumText);
  const tickOut = ticker.stdout.getReader();
  const tickText = { text: "" };
  await readUntil(tickOut, /tick3\n/, tickText);

  await host.detach();
  assert(host.detached);
  // Requests while detached are refused at once, not queued into the void.
  const refused = await assertRejects(() => host.exec(["true"]), "being saved");
  assert(refused instanceof ConnectionError);
  // The plain (not kept) process was ended with the session.
  await assertRejects(() => plain.wait());
  // Output goes on while no host reads it.
  await new Promise((r) => setTimeout(r, 600));
  const stillOpen = await Promise.race([
    host.closed.then(() => "closed"),
    new Promise((r) => setTimeout(() => r("open"), 50)),
  ]);
  assertEquals(stillOpen, "open");

  await host.reattach(await Deno.connect({ transport: "unix", path: agent.socket }));
  await stdin.write(enc.encode("7\n"));
  await readUntil(sumOut, /sum=12\n/, sumText);
  await stdin.close();
  await readUntil(sumOut, /bye\n/, sumText);
  assertEquals(sumText.text, "sum=5\nsum=12\nbye\n");
  assertEquals((await summer.wait()).exitCode, 4);
  await readUntil(tickOut, /tick40\n/, tickText);
  const ticks = tickText.text.trim().split("\n");
  assertEquals(ticks, Array.from({ length: 40 }, (_, i) => `tick${i + 1}`));
  assertEquals((await ticker.wait()).exitCode, 0);
  assertEquals(text((await host.exec(["echo", "again"])).stdout), "again\n");
});

Deno.test("kept - a new host lists kept processes and attaches: replayed output, exit, labels", async () => {
  await using agent = await startAgent();
  {
    await using first = await agent.connect();
    const p = first.spawn(["sh", "-c", "echo hello; echo oops >&2; read x; echo got=$x"], {
      stdin: "piped",
      keep: true,
      label: "p7",
    });
    const r = p.stdout.getReader();
    await readUntil(r, /hello\n/, { text: "" });
    r.releaseLock();
    // The first host goes away without a detach (a lost host): the process stays.
  }
  await using second = await agent.connect();
  const kept = await second.keptProcesses();
  assertEquals(kept.length, 1);
  const info = kept[0]!;
  assertEquals(info.label, "p7");
  assertEquals(info.running, true);
  assertEquals(info.argv[0], "sh");
  assertEquals(info.stdin, true);
  const proc = second.attach(info) as KeptAgentProcess;
  assertEquals(proc.label, "p7");
  const w = proc.stdin.getWriter();
  await w.write(enc.encode("42\n"));
  await w.close();
  const out = await proc.output();
  assertEquals(text(out.stdout), "hello\ngot=42\n");
  assertEquals(text(out.stderr), "oops\n");
  assertEquals(out.exitCode, 0);
  // Its exit was reported: no longer kept.
  assertEquals((await second.keptProcesses()).length, 0);
});

Deno.test("kept - a process that exits while no host is attached is reported to the next", async () => {
  await using agent = await startAgent();
  {
    await using first = await agent.connect();
    first.spawn(["sh", "-c", "echo done-early; exit 9"], { keep: true, label: "early" });
    await first.detach();
  }
  await new Promise((r) => setTimeout(r, 500));
  await using second = await agent.connect();
  const [info] = await second.keptProcesses();
  assert(info, "the exited process is listed");
  assertEquals(info.running, false);
  assertEquals(info.exit?.exitCode, 9);
  const out = await second.attach(info).output();
  assertEquals(text(out.stdout), "done-early\n");
  assertEquals(out.exitCode, 9);
});
