import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { ProcessError, resolveProgram, startProcess } from "./process.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

async function text(stream: ReadableStream<Uint8Array> | null): Promise<string> {
  if (!stream) return "";
  let out = "";
  for await (const c of stream) out += decoder.decode(c, { stream: true });
  return out;
}

async function run(argv: string[], opts: Parameters<typeof startProcess>[1] = {}) {
  const p = startProcess(argv, opts);
  await p.stdin.close();
  const [stdout, stderr, status] = await Promise.all([text(p.stdout), text(p.stderr), p.status]);
  return { stdout, stderr, status, pid: p.pid };
}

function groupAlive(pgid: number): boolean {
  // Zombies do not count: on this host PID 1 may reap orphans late.
  const out = new Deno.Command("ps", { args: ["-o", "stat=", "-g", String(pgid)] }).outputSync();
  return decoder.decode(out.stdout).split("\n").some((s) =>
    s.trim() !== "" && !s.trim().startsWith("Z")
  );
}

Deno.test("startProcess - stdout and stderr are separate, exit code kept", async () => {
  const r = await run(["sh", "-c", "echo out; echo err >&2; exit 7"]);
  assertEquals(r.stdout, "out\n");
  assertEquals(r.stderr, "err\n");
  assertEquals(r.status, { code: 7, signal: null });
});

Deno.test("startProcess - death by signal is 128+N", async () => {
  const r = await run(["sh", "-c", "kill -KILL $$"]);
  assertEquals(r.status, { code: 137, signal: "SIGKILL" });
  const t = await run(["sh", "-c", "kill -TERM $$"]);
  assertEquals(t.status, { code: 143, signal: "SIGTERM" });
});

Deno.test("startProcess - missing binary is ProcessError 127, not a spawn hang", () => {
  const e = assertThrows(() => startProcess(["definitely-not-a-program-xyz"]), "not found in PATH");
  assert(e instanceof ProcessError);
  assertEquals(e.exitCode, 127);
  const f = assertThrows(() => startProcess(["/nonexistent/bin/x"]), "no such file");
  assertEquals((f as ProcessError).exitCode, 127);
});

Deno.test("startProcess - non-executable file is 126; bad cwd is an error", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/script`, "echo hi\n", { mode: 0o644 });
    const e = assertThrows(() => startProcess(["./script"], { cwd: dir }), "not an executable");
    assertEquals((e as ProcessError).exitCode, 126);
    const c = assertThrows(
      () => startProcess(["true"], { cwd: `${dir}/nope` }),
      "no such directory",
    );
    assertEquals((c as ProcessError).code, "bad_cwd");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("startProcess - env and cwd are applied", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await run(["sh", "-c", 'pwd; echo "$FOO|$BAR"'], {
      cwd: dir,
      env: { FOO: "x y" },
      baseEnv: { PATH: "/usr/bin:/bin", BAR: "base" },
    });
    assertEquals(r.stdout, `${await Deno.realPath(dir)}\n` + "x y|base\n");
    const clean = await run(["sh", "-c", 'echo "[$BAR]"'], { baseEnv: {} });
    assertEquals(clean.stdout, "[]\n", "only baseEnv + env reach the child");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startProcess - stdin streamed in and EOF delivered", async () => {
  const p = startProcess(["sh", "-c", "wc -c; echo done"]);
  const w = p.stdin.getWriter();
  const chunk = new Uint8Array(65536).fill(0x41);
  for (let i = 0; i < 64; i++) await w.write(chunk);
  await w.close();
  assertEquals((await text(p.stdout)).trim().split(/\s+/), ["4194304", "done"]);
  assertEquals((await p.status).code, 0);
});

Deno.test("startProcess - own process group; kill reaches the whole group", async () => {
  const p = startProcess(["sh", "-c", "sleep 30 & sleep 30 & echo started; wait"]);
  const reader = p.stdout.getReader();
  const first = await reader.read();
  assertEquals(decoder.decode(first.value), "started\n");
  const ps = new Deno.Command("ps", { args: ["-o", "pgid=,sid=", "-p", String(p.pid)] })
    .outputSync();
  assertEquals(decoder.decode(ps.stdout).trim().split(/\s+/).map(Number), [p.pid, p.pid]);
  assert(groupAlive(p.pid));
  assert(p.kill("TERM"));
  assertEquals((await p.status).code, 143);
  reader.releaseLock();
  await text(p.stdout);
  await p.stdin.close().catch(() => {});
  await text(p.stderr);
  for (let i = 0; i < 50 && groupAlive(p.pid); i++) await new Promise((r) => setTimeout(r, 20));
  assert(!groupAlive(p.pid), "background children were killed with the group");
  const done = startProcess(["true"]);
  await done.stdin.close();
  await Promise.all([text(done.stdout), text(done.stderr), done.status]);
  assertEquals(done.kill("TERM"), false, "kill of a finished group reports false");
});

Deno.test("startProcess - backpressure: a fast writer waits for a slow reader", async () => {
  const p = startProcess(["sh", "-c", "head -c 50000000 /dev/zero; echo finished >&2"]);
  await p.stdin.close();
  const reader = p.stdout.getReader();
  const first = await reader.read();
  assert(!first.done);
  // Without reading, the writer must block on the full pipe instead of finishing.
  await new Promise((r) => setTimeout(r, 300));
  const stderr = p.stderr!.getReader();
  const pendingErr = stderr.read();
  const early = await Promise.race([
    pendingErr.then(() => "stderr"),
    new Promise((r) => setTimeout(() => r("blocked"), 100)),
  ]);
  assertEquals(early, "blocked");
  let total = first.value.length;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.length;
  }
  assertEquals(total, 50000000);
  assertEquals((await p.status).code, 0);
  assertEquals(decoder.decode((await pendingErr).value), "finished\n");
  stderr.releaseLock();
  assertEquals(await text(p.stderr), "");
});

Deno.test("startProcess - many processes at once", async () => {
  const runs = await Promise.all(
    Array.from({ length: 30 }, (_, i) => run(["sh", "-c", `echo ${i}; exit ${i % 5}`])),
  );
  runs.forEach((r, i) => {
    assertEquals(r.stdout, `${i}\n`);
    assertEquals(r.status.code, i % 5);
  });
});

Deno.test("startProcess - tty mode: a terminal, resize, input echoed", async () => {
  const p = startProcess([
    "sh",
    "-c",
    "stty size; until read l; do :; done; stty size; echo got:$l",
  ], {
    tty: { rows: 20, cols: 70 },
  });
  assertEquals(p.stderr, null);
  const reader = p.stdout.getReader();
  let out = "";
  while (!out.includes("20 70")) out += decoder.decode((await reader.read()).value);
  p.resize({ rows: 40, cols: 90 });
  const w = p.stdin.getWriter();
  await w.write(encoder.encode("abc\n"));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += decoder.decode(value);
  }
  assert(out.includes("abc\r\n40 90\r\ngot:abc"), out);
  assertEquals((await p.status).code, 0);
});

Deno.test("resolveProgram - finds programs in PATH like execvp", () => {
  const sh = resolveProgram("sh", { path: "/nonexistent:/bin:/usr/bin", cwd: "/" });
  assert(sh.endsWith("/sh"));
});
