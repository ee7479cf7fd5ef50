/**
 * `--stdio` mode: the control protocol on a subprocess's stdin/stdout (control/serve.ts over a
 * REAL guest agent on this host), driven with the reference's (the Rust shuru for macOS) exact messages. `shuru run --stdio`
 * with a VM uses the same `serveStdio`; its end-to-end test boots QEMU.
 */
import { assert, assertEquals } from "./_assert.ts";
import { REPO, startControl } from "./_control_fixture.ts";
import { LineReader } from "./_lines.ts";

Deno.test("control --stdio - reference messages over a subprocess's stdin/stdout", async () => {
  await using f = await startControl();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      `${REPO}control/serve.ts`,
      "--agent",
      `unix:${f.agentSocket}`,
      "--stdio",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const writer = child.stdin.getWriter();
  const lines = new LineReader(child.stdout);
  const next = () => lines.nextJson(async () => new Error(`stdout ended; stderr: ${await stderr}`));
  const send = (line: string) => writer.write(new TextEncoder().encode(line + "\n"));
  try {
    assertEquals(await next(), { jsonrpc: "2.0", method: "ready" });
    await send('{"jsonrpc":"2.0","id":1,"method":"exec","params":{"argv":["echo","hi"]}}');
    const r1 = (await next()).result as Record<string, unknown>;
    assertEquals([r1.stdout, r1.stderr, r1.exit_code], ["hi\n", "", 0]);
    await send('{"jsonrpc":"2.0","id":2,"method":"spawn","params":{"argv":["cat"]}}');
    const spawned = await next();
    assertEquals(spawned.id, 2);
    const pid = (spawned.result as { pid: string }).pid;
    await send(`{"jsonrpc":"2.0","method":"input","params":{"pid":"${pid}","data":"aGkK"}}`);
    const out = await next();
    assertEquals(out, {
      jsonrpc: "2.0",
      method: "output",
      params: { pid, stream: "stdout", data: "aGkK", seq: 1 },
    });
    await send(`{"jsonrpc":"2.0","id":3,"method":"kill","params":{"pid":"${pid}"}}`);
    const got = [await next(), await next()];
    assert(got.some((m) => m.id === 3 && JSON.stringify(m.result) === "{}"), JSON.stringify(got));
    assert(got.some((m) => m.method === "exit"), JSON.stringify(got));
    // The reference ends the session on checkpoint; here it is an error on a bare agent and the
    // session goes on.
    await send('{"jsonrpc":"2.0","id":4,"method":"checkpoint","params":{"name":"x"}}');
    const cp = await next();
    assertEquals((cp.error as { data: { kind: string } }).data.kind, "UNSUPPORTED");
    await send('{"jsonrpc":"2.0","id":5,"method":"stat","params":{"path":"/"}}');
    assertEquals(((await next()).result as { is_dir: boolean }).is_dir, true);
  } finally {
    // EOF on stdin ends the server.
    await writer.close();
    const status = await child.status;
    await lines.cancel().catch(() => {});
    assertEquals(status.code, 0, await stderr);
  }
});
