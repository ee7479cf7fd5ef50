/**
 * The SDK (`mod.ts`) end to end: `Sandbox.connect` to a control socket served for a REAL guest
 * agent on this host; every call goes through the control protocol.
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startControl } from "./_control_fixture.ts";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  ProcessNotFoundError,
  Sandbox,
} from "../mod.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function sha256(data: Uint8Array | ReadableStream<Uint8Array>): Promise<string> {
  const bytes = data instanceof Uint8Array ? data : await new Response(data).bytes();
  const h = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return new Uint8Array(h).toHex();
}

Deno.test("SDK - exec, spawn with Web streams, kill, ps, typed errors", async () => {
  await using f = await startControl();
  await using sb = await Sandbox.connect(`unix:${f.controlSocket}`);
  assertEquals((sb.info as { protocol_version: string }).protocol_version, "1.0");

  const r = await sb.exec("echo hi; echo oops >&2; exit 3");
  assertEquals(r, {
    stdout: "hi\n",
    stderr: "oops\n",
    exitCode: 3,
    signal: null,
    timedOut: false,
    truncated: false,
  });
  const withInput = await sb.exec(["sh", "-c", "tr a-z A-Z; pwd; echo $X"], {
    stdin: "abc\n",
    cwd: f.dir,
    env: { X: "y" },
  });
  assertEquals(withInput.stdout, `ABC\n${f.dir}\ny\n`);
  const slow = await sb.exec(["sleep", "20"], { timeoutMs: 300 });
  assertEquals([slow.timedOut, slow.exitCode, slow.signal], [true, 137, "SIGKILL"]);

  const ac = new AbortController();
  const aborted = sb.exec(["sleep", "20"], { signal: ac.signal });
  setTimeout(() => ac.abort(new Error("stop it")), 100);
  await assertRejects(() => aborted, "stop it");

  const proc = await sb.spawn(["sh", "-c", "while read l; do echo got $l; echo err $l >&2; done"]);
  const w = proc.stdin.getWriter();
  await w.write(new TextEncoder().encode("a\nb\n"));
  await w.close();
  const out = await proc.output();
  assertEquals([text(out.stdout), text(out.stderr), out.exitCode], [
    "got a\ngot b\n",
    "err a\nerr b\n",
    0,
  ]);

  const sleeper = await sb.spawn(["sleep", "30"]);
  const listed = await sb.ps();
  assert(listed.some((p) => p.pid === sleeper.pid && p.state === "running"));
  await sleeper.kill("SIGTERM");
  assertEquals(await sleeper.wait(), { exitCode: 143, success: false, signal: "SIGTERM" });
  await assertRejects(() => sleeper.kill(), "exited");
  const e = await assertRejects(() => sleeper.kill());
  assert(e instanceof ProcessNotFoundError, e.name);

  // A process printing more than one chunk, read as a stream.
  const big = await sb.spawn(["head", "-c", "3000000", "/dev/zero"]);
  let n = 0;
  for await (const c of big.stdout) n += c.length;
  assertEquals(n, 3_000_000);
  assertEquals((await big.wait()).exitCode, 0);
});

Deno.test("SDK - fs shaped like Deno's file API, with typed errors and watch", async () => {
  await using f = await startControl();
  await using sb = await Sandbox.connect(`unix:${f.controlSocket}`);
  const d = `${f.dir}/fs`;
  await sb.fs.mkdir(`${d}/sub`, { recursive: true });
  await sb.fs.writeTextFile(`${d}/a.txt`, "hello");
  await sb.fs.writeTextFile(`${d}/a.txt`, " world", { append: true });
  assertEquals(await sb.fs.readTextFile(`${d}/a.txt`), "hello world");
  assertEquals(await Deno.readTextFile(`${d}/a.txt`), "hello world");
  await sb.fs.writeFile(`${d}/empty`, new Uint8Array());
  assertEquals((await sb.fs.readFile(`${d}/empty`)).length, 0);
  const st = await sb.fs.stat(`${d}/a.txt`);
  assertEquals([st.isFile, st.isDirectory, st.size], [true, false, 11]);
  assert(st.mtime instanceof Date);
  await sb.fs.chmod(`${d}/a.txt`, 0o640);
  assertEquals((await Deno.stat(`${d}/a.txt`)).mode! & 0o777, 0o640);
  await sb.fs.copy(`${d}/a.txt`, `${d}/sub/b.txt`);
  await sb.fs.rename(`${d}/sub/b.txt`, `${d}/sub/c.txt`);
  const names = [];
  for await (const e of sb.fs.readDir(d)) names.push(`${e.name}:${e.isDirectory ? "d" : "f"}`);
  assertEquals(names.sort(), ["a.txt:f", "empty:f", "sub:d"]);
  assertEquals(await sb.fs.exists(`${d}/sub/c.txt`), true);
  assertEquals(await sb.fs.exists(`${d}/nope`), false);

  const nf = await assertRejects(() => sb.fs.readFile(`${d}/nope`));
  assert(nf instanceof NotFoundError, nf.name);
  const ex = await assertRejects(() => sb.fs.mkdir(`${d}/sub`));
  assert(ex instanceof AlreadyExistsError, ex.name);
  const inv = await assertRejects(() => sb.fs.chmod(`${d}/a.txt`, -1));
  assert(inv instanceof InvalidArgumentError, inv.name);
  await sb.fs.remove(d, { recursive: true });
  assertEquals(await sb.fs.exists(d), false);

  await Deno.mkdir(`${f.dir}/w`);
  await using watcher = await sb.fs.watch(`${f.dir}/w`);
  const touching = setInterval(() => Deno.writeTextFileSync(`${f.dir}/w/x`, "1"), 100);
  try {
    for await (const ev of watcher) {
      assertEquals(ev.paths, [`${f.dir}/w/x`]);
      assert(["create", "modify"].includes(ev.kind), ev.kind);
      break;
    }
  } finally {
    clearInterval(touching);
  }
});

Deno.test("SDK - a 200 MiB file through the protocol in chunks, both ways, hashes equal", async () => {
  await using f = await startControl();
  await using sb = await Sandbox.connect(`unix:${f.controlSocket}`);
  const size = 200 * 1024 * 1024;
  const data = new Uint8Array(size);
  // Random-looking, incompressible, cheap to make: xorshift words.
  const words = new Uint32Array(data.buffer);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  const want = await sha256(data);
  const path = `${f.dir}/big.bin`;
  await sb.fs.writeFile(path, data);
  assertEquals((await Deno.stat(path)).size, size);
  assertEquals(await sha256(await Deno.readFile(path)), want);
  const back = await sb.fs.readFile(path);
  assertEquals(back.length, size);
  assertEquals(await sha256(back), want);
  // And as a stream (upload) of odd-sized pieces.
  const pieces = ReadableStream.from((function* () {
    for (let o = 0; o < size; o += 3_333_333) yield data.subarray(o, o + 3_333_333);
  })());
  await sb.fs.writeFile(`${path}.2`, pieces);
  assertEquals(await sha256(sb.fs.readFileStream(`${path}.2`)), want);
});

Deno.test("SDK - spawn on a terminal: size, resize, input echoed", async () => {
  await using f = await startControl();
  await using sb = await Sandbox.connect(`unix:${f.controlSocket}`);
  const proc = await sb.spawn(["sh", "-c", "stty size; tty; read x; echo got $x; stty size"], {
    tty: { rows: 30, cols: 100 },
  });
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const until = async (s: string) => {
    while (!out.includes(s)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`output ended before "${s}": ${out}`);
      out += value;
    }
  };
  await until("/dev/pts");
  assert(out.includes("30 100"), out);
  await proc.resize(40, 120);
  const w = proc.stdin.getWriter();
  await w.write(new TextEncoder().encode("typed\r"));
  await until("40 120");
  assert(out.includes("typed"), out); // the terminal echoes input
  assert(out.includes("got typed"), out);
  assertEquals((await proc.wait()).exitCode, 0);
  await w.close().catch(() => {});
});
