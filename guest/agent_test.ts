/**
 * The agent's handlers through the real protocol: a host-side Mux talks to serveConnection over
 * a real Unix socket in this process. (tests/agent_test.ts drives the agent as a subprocess
 * through the Sandbox API; these tests cover the guest-side details.)
 */
import { assert, assertEquals } from "../tests/_assert.ts";
import { Mux, type MuxStream, readJsonLines } from "../proto/mod.ts";
import { serveConnection } from "./agent.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

interface Harness extends AsyncDisposable {
  mux: Mux;
  dir: string;
  logs: string[];
}

async function harness(): Promise<Harness> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "shuru-agent-unit-" }));
  const listener = Deno.listen({ transport: "unix", path: `${dir}/a.sock` });
  const logs: string[] = [];
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await serveConnection(conn, { log: (l) => logs.push(l), onShutdown: () => {} });
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  })();
  const conn = await Deno.connect({ transport: "unix", path: `${dir}/a.sock` });
  const mux = await Mux.connect(conn, { role: "host", version: "test" });
  return {
    mux,
    dir,
    logs,
    async [Symbol.asyncDispose]() {
      await mux.close();
      await served;
      listener.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function readText(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  for await (const c of stream) out += decoder.decode(c, { stream: true });
  return out;
}

async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  pattern: RegExp,
  sofar: { text: string },
): Promise<void> {
  while (!pattern.test(sofar.text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ended before ${pattern}: ${JSON.stringify(sofar.text)}`);
    sofar.text += decoder.decode(value);
  }
}

Deno.test("agent - tty exec: terminal, size, resize, echoed input, exit code", async () => {
  await using h = await harness();
  const s = h.mux.open({
    op: "exec",
    argv: ["sh", "-c", "tty; stty size; echo T=$TERM; until read l; do :; done; stty size; exit 3"],
    tty: { rows: 30, cols: 100 },
  });
  const started = await s.nextMessage();
  assertEquals(started?.type, "started");
  const reader = s.channel(1).readable.getReader();
  const out = { text: "" };
  await readUntil(reader, /30 100\r\nT=xterm-256color/, out);
  assert(out.text.startsWith("/dev/pts/"), out.text);
  // No pause: the resize must take effect before the input that follows it on the wire.
  await s.send({ type: "resize", rows: 45, cols: 120 });
  await s.channel(0).write(encoder.encode("typed\n"));
  await readUntil(reader, /typed\r\n45 120/, out);
  reader.releaseLock();
  await readText(s.channel(1).readable);
  assertEquals(await s.result, { exitCode: 3 });
});

Deno.test("agent - missing binary on a tty: message on the terminal channel, 127", async () => {
  await using h = await harness();
  const s = h.mux.open({ op: "exec", argv: ["no-such-program-zz"], tty: { rows: 24, cols: 80 } });
  const out = await readText(s.channel(1).readable);
  assert(out.includes('cannot execute "no-such-program-zz"'), out);
  assertEquals(await s.result, { exitCode: 127 });
});

Deno.test("agent - bad cwd is a not_found RESET; signal message kills the group", async () => {
  await using h = await harness();
  const bad = h.mux.open({ op: "exec", argv: ["true"], cwd: `${h.dir}/none` });
  const err = await bad.result.catch((e) => e);
  assertEquals(err.code, "not_found");
  const s = h.mux.open({ op: "exec", argv: ["sh", "-c", "sleep 60 & echo up; wait"] });
  const reader = s.channel(1).readable.getReader();
  assertEquals(decoder.decode((await reader.read()).value), "up\n");
  await s.send({ type: "signal", signal: "SIGTERM" });
  reader.releaseLock();
  await readText(s.channel(1).readable);
  assertEquals(await s.result, { exitCode: 143, signal: "SIGTERM" });
});

Deno.test("agent - exec reports the exit even if a background child keeps stdout open", async () => {
  await using h = await harness();
  const s = h.mux.open({ op: "exec", argv: ["sh", "-c", "sleep 30 & echo parent-done"] });
  const [out, result] = await Promise.all([readText(s.channel(1).readable), s.result]);
  assertEquals(out, "parent-done\n");
  assertEquals(result, { exitCode: 0 });
  // Clean up the background sleep: it is in the (finished) process group of the shell.
  const k = h.mux.open({ op: "exec", argv: ["pkill", "-f", "^sleep 30$"] });
  await k.result;
});

Deno.test("agent - files through the protocol: write, read with offset, read_dir, stat, errors", async () => {
  await using h = await harness();
  const w = h.mux.open({ op: "write_file", path: `${h.dir}/f.bin`, mode: 0o600 });
  const data = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => (i * 31) & 0xff);
  await w.channel(0).write(data);
  await w.channel(0).closeWrite();
  assertEquals(await w.result, { size: data.length });
  const r = h.mux.open({
    op: "read_file",
    path: `${h.dir}/f.bin`,
    offset: 1000,
    length: 2_000_000,
  });
  const chunks: Uint8Array[] = [];
  for await (const c of r.channel(0).readable) chunks.push(c);
  const back = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    back.set(c, off);
    off += c.length;
  }
  assertEquals(back, data.subarray(1000, 2_001_000));
  assertEquals(await r.result, { size: 2_000_000 });
  const st = h.mux.open({ op: "stat", path: `${h.dir}/f.bin` });
  const info = await st.result;
  assertEquals([info.type, info.size, info.mode], ["file", data.length, 0o600]);
  const d = h.mux.open({ op: "read_dir", path: h.dir });
  const names: string[] = [];
  for await (const e of readJsonLines(d.channel(0).readable)) names.push(String(e.name));
  assertEquals(names.sort(), ["a.sock", "f.bin"]);
  assertEquals(await d.result, { count: 2 });
  const missing = h.mux.open({ op: "read_file", path: `${h.dir}/nope` });
  const e = await missing.result.catch((x) => x);
  assertEquals(e.code, "not_found");
  assert(e.message.includes(`Cannot read ${h.dir}/nope`), e.message);
});

Deno.test("agent - watch announces readiness and streams events until reset", async () => {
  await using h = await harness();
  const s: MuxStream = h.mux.open({ op: "watch", path: h.dir });
  assertEquals(await s.nextMessage(), { type: "watching" });
  await Deno.writeTextFile(`${h.dir}/new.txt`, "x");
  const lines = readJsonLines(s.channel(0).readable)[Symbol.asyncIterator]();
  const first = await lines.next();
  assertEquals(first.value, { kind: "create", paths: [`${h.dir}/new.txt`] });
  s.reset({ code: "cancelled", message: "done watching" });
  await lines.return?.(undefined);
});

Deno.test("agent - forward relays a TCP connection both ways with half-close", async () => {
  await using h = await harness();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const c = await listener.accept();
    let got = "";
    const buf = new Uint8Array(1024);
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break; // the host's FIN arrived as a TCP half-close
      got += decoder.decode(buf.subarray(0, n));
    }
    await c.write(encoder.encode(`you said ${got}`));
    c.close();
  })();
  const s = h.mux.open({ op: "forward", port: (listener.addr as Deno.NetAddr).port });
  await s.channel(0).write(encoder.encode("ping"));
  await s.channel(0).closeWrite();
  assertEquals(await readText(s.channel(0).readable), "you said ping");
  assertEquals(await s.result, {});
  await served;
  const refused = h.mux.open({ op: "forward", port: 1 });
  assertEquals((await refused.result.catch((e) => e)).code, "connection_refused");
});

Deno.test("agent - forward keeps host -> guest bytes flowing after the server half-closes", async () => {
  await using h = await harness();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const c = await listener.accept();
    await c.write(encoder.encode("greeting"));
    await c.closeWrite();
    let got = "";
    const buf = new Uint8Array(1024);
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break;
      got += decoder.decode(buf.subarray(0, n));
    }
    c.close();
    return got;
  })();
  const s = h.mux.open({ op: "forward", port: (listener.addr as Deno.NetAddr).port });
  assertEquals(await readText(s.channel(0).readable), "greeting");
  await s.channel(0).write(encoder.encode("late reply"));
  await s.channel(0).closeWrite();
  assertEquals(await served, "late reply");
  assertEquals(await s.result, {});
});

Deno.test("agent - set_identity is refused outside a VM (it would set the host's clock and name)", async () => {
  await using h = await harness();
  const before = await Deno.readTextFile("/proc/sys/kernel/hostname");
  const s = h.mux.open({
    op: "set_identity",
    entropy: new Uint8Array(32).fill(7).toBase64(),
    unixMs: 1,
    hostname: "not-this-host",
    machineId: "0".repeat(32),
  });
  const e = await s.result.catch((x) => x);
  assertEquals(e.code, "unsupported");
  assertEquals(await Deno.readTextFile("/proc/sys/kernel/hostname"), before);
});
