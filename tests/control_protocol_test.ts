/**
 * The control protocol over a real control socket, served for a REAL guest agent running on this
 * host (guest/main.ts over a Unix socket). Messages are written by hand, as the reference's (the
 * Rust shuru for macOS this project re-creates)
 * `--stdio` clients write them.
 */
import { assert, assertEquals } from "./_assert.ts";
import { RawClient, startControl } from "./_control_fixture.ts";

type Msg = Record<string, unknown>;
const req = (id: unknown, method: string, params?: unknown) =>
  JSON.stringify(
    params === undefined ? { jsonrpc: "2.0", id, method } : { jsonrpc: "2.0", id, method, params },
  );
const b64 = (s: string) => new TextEncoder().encode(s).toBase64();
const unb64 = (s: string) => new TextDecoder().decode(Uint8Array.fromBase64(s));
const errOf = (m: Msg) => m.error as { code: number; message: string; data: { kind: string } };

Deno.test("control - the reference's --stdio messages work unchanged", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  assertEquals(await c.next(), { jsonrpc: "2.0", method: "ready" });

  // exec {argv} -> {stdout, stderr, exit_code}
  await c.sendLine('{"jsonrpc":"2.0","id":1,"method":"exec","params":{"argv":["echo","hi"]}}');
  const r1 = (await c.response(1)).result as Msg;
  assertEquals([r1.stdout, r1.stderr, r1.exit_code], ["hi\n", "", 0]);

  // spawn {argv, env, cwd} -> {pid}; output/exit notifications; input as a notification (no id)
  await c.sendLine(
    req(2, "spawn", {
      argv: ["sh", "-c", 'echo "$GREETING $(pwd)"; cat'],
      env: { GREETING: "hello" },
      cwd: f.dir,
    }),
  );
  const pid = ((await c.response(2)).result as Msg).pid as string;
  assert(typeof pid === "string" && pid.startsWith("p"), `pid ${pid}`);
  await c.sendLine(
    JSON.stringify({ jsonrpc: "2.0", method: "input", params: { pid, data: b64("typed\n") } }),
  );
  let out = "";
  while (!out.includes("typed\n")) {
    const n = await c.next();
    assertEquals(n.method, "output");
    const p = n.params as Msg;
    assertEquals([p.pid, p.stream], [pid, "stdout"]);
    assert(typeof p.seq === "number");
    out += unb64(p.data as string);
  }
  assertEquals(out, `hello ${f.dir}\ntyped\n`);
  // kill {pid} -> {}; then exit {pid, code}
  await c.sendLine(req(3, "kill", { pid }));
  assertEquals((await c.response(3)).result, {});
  let exit: Msg | undefined;
  while (!exit) {
    const n = await c.next();
    if (n.method === "exit") exit = n.params as Msg;
  }
  assertEquals([exit.pid, exit.code, exit.signal], [pid, 137, "SIGKILL"]);

  // Files, with the reference's parameter names.
  const p = `${f.dir}/ref.txt`;
  await c.sendLine(req(4, "write_file", { path: p, content: b64("content!") }));
  assertEquals((await c.response(4)).result, { bytes: 8 });
  assertEquals(await Deno.readTextFile(p), "content!");
  await c.sendLine(req(5, "read_file", { path: p }));
  assertEquals(unb64(((await c.response(5)).result as Msg).content as string), "content!");
  await c.sendLine(req(6, "mkdir", { path: `${f.dir}/d/e` }));
  assertEquals((await c.response(6)).result, {});
  await c.sendLine(req(7, "copy", { src: p, dst: `${f.dir}/d/copy.txt` }));
  assertEquals((await c.response(7)).result, {});
  await c.sendLine(
    req(8, "rename", { old_path: `${f.dir}/d/copy.txt`, new_path: `${f.dir}/d/moved.txt` }),
  );
  assertEquals((await c.response(8)).result, {});
  await c.sendLine(req(9, "chmod", { path: `${f.dir}/d/moved.txt`, mode: 0o600 }));
  assertEquals((await c.response(9)).result, {});
  await c.sendLine(req(10, "read_dir", { path: `${f.dir}/d` }));
  const entries = ((await c.response(10)).result as { entries: Msg[] }).entries
    .sort((a, b) => String(a.name).localeCompare(String(b.name)));
  assertEquals(entries, [{ name: "e", type: "dir", size: 0 }, {
    name: "moved.txt",
    type: "file",
    size: 8,
  }]);
  await c.sendLine(req(11, "stat", { path: `${f.dir}/d/moved.txt` }));
  const st = (await c.response(11)).result as Msg;
  assertEquals([st.size, st.is_file, st.is_dir, st.is_symlink, (st.mode as number) & 0o777], [
    8,
    true,
    false,
    false,
    0o600,
  ]);
  assert(Math.abs((st.mtime as number) - Date.now() / 1000) < 60, `mtime ${st.mtime}`);
  await c.sendLine(req(12, "remove", { path: `${f.dir}/d`, recursive: true }));
  assertEquals((await c.response(12)).result, {});
  assertEquals(await Deno.stat(`${f.dir}/d`).catch(() => null), null);

  // watch -> file_change {path, event}
  await Deno.mkdir(`${f.dir}/w`);
  await c.sendLine(req(13, "watch", { path: `${f.dir}/w` }));
  const watchId = ((await c.response(13)).result as Msg).watch_id;
  assert(typeof watchId === "string");
  // The agent installs its watcher asynchronously: touch until the first event shows up.
  let change: Msg | undefined;
  const touching = setInterval(() => Deno.writeTextFileSync(`${f.dir}/w/new.txt`, "x"), 100);
  try {
    while (!change) {
      const n = await c.next();
      if (n.method === "file_change") change = n.params as Msg;
    }
  } finally {
    clearInterval(touching);
  }
  assert(["create", "modify"].includes(change.event as string), String(change.event));
  change.event = "create";
  assertEquals([change.path, change.event, change.watch_id], [
    `${f.dir}/w/new.txt`,
    "create",
    watchId,
  ]);
  await c.sendLine(req(14, "unwatch", { watch_id: watchId }));
  assertEquals((await c.response(14)).result, {});
});

Deno.test("control - error codes: -32700, -32601, -32602, -32000 with data.kind", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  await c.sendLine("{oops");
  const parse = await c.response(null);
  assertEquals(errOf(parse).code, -32700);
  await c.sendLine(req(1, "frobnicate", {}));
  assertEquals(errOf(await c.response(1)).code, -32601);
  await c.sendLine(req(2, "exec", { argv: [] }));
  const bad = errOf(await c.response(2));
  assertEquals([bad.code, bad.data.kind], [-32602, "EINVAL"]);
  await c.sendLine(req(3, "read_file", { path: `${f.dir}/missing` }));
  const missing = errOf(await c.response(3));
  assertEquals([missing.code, missing.data.kind], [-32000, "ENOENT"]);
  assert(missing.message.startsWith("Cannot"), missing.message);
  await c.sendLine(req(4, "input", { pid: "p999", data: b64("x") }));
  assertEquals(errOf(await c.response(4)).data.kind, "NO_SUCH_PROCESS");
  await c.sendLine(req(5, "kill", { pid: "p999" }));
  assertEquals(errOf(await c.response(5)).data.kind, "NO_SUCH_PROCESS");
  await c.sendLine(req(6, "kill", { pid: "p1", signal: "SIGBOGUS" }));
  assertEquals(errOf(await c.response(6)).code, -32602);
  await c.sendLine(req(7, "mkdir", { path: `${f.dir}/x/y`, recursive: false }));
  assertEquals(errOf(await c.response(7)).data.kind, "ENOENT");
  await c.sendLine(req(8, "checkpoint", { name: "c1" }));
  assertEquals(errOf(await c.response(8)).data.kind, "UNSUPPORTED");
  // A missing binary is a result with 127, not an error.
  await c.sendLine(req(9, "exec", { argv: ["/no/such/binary"] }));
  assertEquals(((await c.response(9)).result as Msg).exit_code, 127);
});

Deno.test("control - exec: non-zero exit, stdin, cwd, env, signal, max_output_bytes, initialize", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  await c.sendLine(req(1, "initialize", { client: { name: "test" } }));
  const init = (await c.response(1)).result as Msg;
  assertEquals(init.protocol_version, "1.0");
  assert(((init.capabilities as Msg).methods as string[]).includes("attach"));

  await c.sendLine(req(2, "exec", { argv: ["sh", "-c", "echo out; echo err >&2; exit 7"] }));
  const r2 = (await c.response(2)).result as Msg;
  assertEquals([r2.stdout, r2.stderr, r2.exit_code, r2.timed_out], ["out\n", "err\n", 7, false]);

  await c.sendLine(
    req(3, "exec", {
      argv: ["sh", "-c", 'cat; pwd; echo "$A"'],
      stdin: "in put\n",
      cwd: f.dir,
      env: { A: "b c" },
    }),
  );
  assertEquals(((await c.response(3)).result as Msg).stdout, `in put\n${f.dir}\nb c\n`);

  await c.sendLine(req(4, "exec", { argv: ["sh", "-c", "kill -TERM $$"] }));
  const r4 = (await c.response(4)).result as Msg;
  assertEquals([r4.exit_code, r4.signal], [143, "SIGTERM"]);

  await c.sendLine(
    req(5, "exec", {
      argv: ["head", "-c", "100000", "/dev/zero"],
      max_output_bytes: 1000,
      encoding: "base64",
    }),
  );
  const r5 = (await c.response(5)).result as Msg;
  assertEquals(Uint8Array.fromBase64(r5.stdout as string).length, 1000);
  assertEquals(r5.truncated, { stdout: true, stderr: false });
  assertEquals(r5.exit_code, 0);
});

Deno.test("control - exec timeout kills the process and says timed_out", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  await c.sendLine(
    req(1, "exec", { argv: ["sh", "-c", "echo started; sleep 600"], timeout_ms: 500 }),
  );
  // Only the timeout ends it (sleep 600 would outlive the test's deadline): killed, timed_out.
  const r = (await c.response(1)).result as Msg;
  assertEquals([r.timed_out, r.exit_code, r.signal, r.stdout], [true, 137, "SIGKILL", "started\n"]);
});

Deno.test("control - a long exec does not delay kill/input of another process; $/cancel kills an exec", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  // Long enough to still run when its cancel comes, however slow the machine.
  await c.sendLine(req("long", "exec", { argv: ["sleep", "600"] }));
  await c.sendLine(req("sp", "spawn", { argv: ["cat"] }));
  const pid = ((await c.response("sp")).result as Msg).pid as string;
  await c.sendLine(req("in", "input", { pid, data: b64("ping\n") }));
  assertEquals((await c.response("in")).result, {});
  const echoed = () =>
    c.notifications.some((n) =>
      n.method === "output" && unb64((n.params as Msg).data as string) === "ping\n"
    );
  while (!echoed()) c.notifications.push(await c.next());
  await c.sendLine(req("k", "kill", { pid, signal: "SIGTERM" }));
  // The kill is answered while the long exec is still running (response() would throw on it).
  const killed = await c.response("k");
  assertEquals(killed.result, {});
  assert(!c.notifications.some((n) => n.id === "long"), "exec answered first");
  const exits = () => c.notifications.filter((n) => n.method === "exit");
  while (exits().length === 0) c.notifications.push(await c.next());
  assertEquals((exits()[0]!.params as Msg).code, 143);
  // Cancel the long exec: it is killed and answers CANCELLED.
  await c.sendLine(JSON.stringify({ jsonrpc: "2.0", method: "$/cancel", params: { id: "long" } }));
  const cancelled = errOf(await c.response("long"));
  assertEquals(cancelled.data.kind, "CANCELLED");
  await c.sendLine(req("ps", "ps"));
  const procs = ((await c.response("ps")).result as { processes: Msg[] }).processes;
  assertEquals(procs.map((p) => [p.argv, p.state]), [[["sleep", "600"], "exited"], [
    ["cat"],
    "exited",
  ]]);
});

Deno.test("control - 20 parallel execs on one connection", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  // Each exec checks in, then waits until all 20 have: only execs that run at the same time
  // can all finish (run one after another, the first would wait forever), whatever the speed.
  const barrier = `${f.dir}/barrier`;
  await Deno.mkdir(barrier);
  const script = 'touch "$0/$1"; while [ "$(ls "$0" | wc -l)" -lt 20 ]; do sleep 0.05; done; ' +
    'echo "$1"';
  for (let i = 0; i < 20; i++) {
    await c.sendLine(req(i, "exec", { argv: ["sh", "-c", script, barrier, String(i)] }));
  }
  const seen = new Set<number>();
  while (seen.size < 20) {
    const m = await c.next();
    assert("id" in m, JSON.stringify(m));
    assertEquals((m.result as Msg).stdout, `${m.id}\n`);
    seen.add(m.id as number);
  }
});

Deno.test("control - two clients: one attaches to the other's process with since_seq replay", async () => {
  await using f = await startControl();
  await using a = await RawClient.connect(f.controlSocket);
  await using b = await RawClient.connect(f.controlSocket);
  await a.next();
  await b.next();
  await a.sendLine(
    req(1, "spawn", { argv: ["sh", "-c", "echo one; echo two >&2; read x; echo $x"] }),
  );
  const pid = ((await a.response(1)).result as Msg).pid as string;
  // Wait until a has seen both first chunks. They come from two pipes, so either may be
  // numbered first: replay from the first one a saw must return the other.
  const outs = () => a.notifications.filter((n) => n.method === "output");
  while (outs().length < 2) a.notifications.push(await a.next());
  const [first, second] = outs().map((n) => n.params as Msg) as [Msg, Msg];
  const firstSeq = first.seq as number;
  const seenSeq = Math.max(firstSeq, second.seq as number);
  assertEquals(
    [first, second].map((p) => [p.stream, unb64(p.data as string)]).sort(),
    [["stderr", "two\n"], ["stdout", "one\n"]],
  );

  await b.sendLine(req(1, "ps"));
  const listed = ((await b.response(1)).result as { processes: Msg[] }).processes;
  assertEquals(listed.map((p) => [p.pid, p.state]), [[pid, "running"]]);
  await b.sendLine(req(2, "attach", { pid, since_seq: firstSeq }));
  const att = (await b.response(2)).result as {
    chunks: Msg[];
    truncated: boolean;
    exited: unknown;
  };
  assertEquals(att.chunks.map((c) => [c.stream, unb64(c.data as string)]), [
    [second.stream, unb64(second.data as string)],
  ]);
  assertEquals([att.truncated, att.exited], [false, null]);
  // b drives the process a started; both see the rest of the output and the exit.
  await b.sendLine(req(3, "input", { pid, data: b64("three\n"), eof: true }));
  assertEquals((await b.response(3)).result, {});
  for (const client of [a, b]) {
    let text = "";
    let exit: Msg | undefined;
    while (!exit) {
      const n = client.notifications.shift() ?? await client.next();
      if (n.method === "output" && ((n.params as Msg).seq as number) > seenSeq) {
        text += unb64((n.params as Msg).data as string);
      }
      if (n.method === "exit") exit = n.params as Msg;
    }
    assertEquals([text, exit.code], ["three\n", 0]);
  }
});

Deno.test("control - close_stdin of a process that already exited is done; input to it is PROCESS_EXITED", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  // Like `tar -x`: it stops reading at its own end, before the writer closes its input.
  await c.sendLine(req(1, "spawn", { argv: ["head", "-c", "3"] }));
  const pid = ((await c.response(1)).result as Msg).pid;
  await c.sendLine(req(2, "input", { pid, data: b64("abc") }));
  assertEquals((await c.response(2)).result, {});
  let exit: Msg | undefined;
  while (!exit) {
    const n = c.notifications.shift() ?? await c.next();
    if (n.method === "exit") exit = n.params as Msg;
  }
  assertEquals(exit.code, 0);
  await c.sendLine(req(3, "close_stdin", { pid }));
  assertEquals((await c.response(3)).result, {});
  await c.sendLine(req(4, "input", { pid, data: b64("more") }));
  assertEquals(errOf(await c.response(4)).data.kind, "PROCESS_EXITED");
});

Deno.test("control - the control socket is 0600 and another user cannot connect", async () => {
  await using f = await startControl();
  assertEquals((await Deno.stat(f.controlSocket)).mode! & 0o777, 0o600);
  // Open the directory so only the socket's own mode protects it.
  await Deno.chmod(f.dir, 0o755);
  const probe = `const c = await Deno.connect({transport: "unix", path: ${
    JSON.stringify(f.controlSocket)
  }}); c.close(); console.log("connected");`;
  const asNobody = await new Deno.Command("setpriv", {
    args: [
      "--reuid=nobody",
      "--regid=nogroup",
      "--clear-groups",
      Deno.execPath(),
      "eval",
      "--quiet",
      probe,
    ],
    env: { DENO_DIR: `${f.dir}/deno-nobody`, HOME: f.dir },
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err) => {
    throw new Error(`Cannot run setpriv (apt-get install util-linux): ${err.message}`);
  });
  const stderr = new TextDecoder().decode(asNobody.stderr);
  assertEquals(asNobody.success, false, "nobody connected to the control socket");
  assert(/PermissionDenied|Permission denied|EACCES/.test(stderr), stderr);
  // As its owner it works.
  await using c = await RawClient.connect(f.controlSocket);
  assertEquals(await c.next(), { jsonrpc: "2.0", method: "ready" });
});

Deno.test("control - shutdown and stop_on_close reach the backend; the server reports it", async () => {
  let shutdowns = 0;
  await using f = await startControl({
    backend: {
      shutdown: () => {
        shutdowns++;
        return Promise.resolve();
      },
      info: () => ({ name: "test-sandbox" }),
    },
  });
  {
    await using owner = await RawClient.connect(f.controlSocket);
    await owner.next();
    await owner.sendLine(req(1, "initialize", { stop_on_close: true }));
    const init = (await owner.response(1)).result as Msg;
    assertEquals(init.sandbox, { name: "test-sandbox" });
    assertEquals((init.capabilities as Msg).shutdown, true);
    assertEquals(shutdowns, 0);
  }
  // The owner's connection closed (as when its process exits): the sandbox is stopped.
  await f.server.shutdownRequested;
  assertEquals(shutdowns, 1);
});

Deno.test("control - explicit shutdown request", async () => {
  let shutdowns = 0;
  await using f = await startControl({
    backend: {
      shutdown: () => {
        shutdowns++;
        return Promise.resolve();
      },
    },
  });
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  await c.sendLine(req(1, "shutdown", {}));
  assertEquals((await c.response(1)).result, {});
  await f.server.shutdownRequested;
  assertEquals(shutdowns, 1);
});

Deno.test("control - the agent dying ends running processes with an error and later calls say SANDBOX_GONE", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  await c.sendLine(req(1, "spawn", { argv: ["sleep", "30"] }));
  const pid = ((await c.response(1)).result as Msg).pid;
  await c.sendLine(req(2, "exec", { argv: ["sleep", "30"] }));
  await f.killAgent();
  const answer = await c.response(2);
  assertEquals(errOf(answer).data.kind, "SANDBOX_GONE");
  let exit: Msg | undefined;
  while (!exit) {
    const n = c.notifications.shift() ?? await c.next();
    if (n.method === "exit") exit = n.params as Msg;
  }
  assertEquals(exit.pid, pid);
  assert(typeof exit.error === "string", JSON.stringify(exit));
  await c.sendLine(req(3, "stat", { path: "/" }));
  assertEquals(errOf(await c.response(3)).data.kind, "SANDBOX_GONE");
});

Deno.test("control - a client that does not read holds the process back; memory stays bounded", async () => {
  await using f = await startControl();
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  const total = 64 * 1024 * 1024;
  await c.sendLine(req(1, "spawn", { argv: ["head", "-c", String(total), "/dev/zero"] }));
  // Do not read: the server's queue for this client fills up to its cap and stays near it.
  // Sampled until it reached half the cap (however long the process takes to get there), then
  // twenty more times.
  const cap = f.server.limits.CLIENT_QUEUE_BYTES;
  let maxQueued = 0;
  let after = 0;
  const deadline = Date.now() + 120_000;
  while (maxQueued < cap / 2 || after++ < 20) {
    assert(Date.now() < deadline, `the queue never reached half its cap: ${maxQueued} of ${cap}`);
    await new Promise((r) => setTimeout(r, 100));
    for (const s of f.server.sessionStats()) maxQueued = Math.max(maxQueued, s.queuedBytes);
  }
  // One notification of slack: the pump checks the cap after queuing a chunk.
  assert(maxQueued <= cap + 2 * 1024 * 1024, `queued ${maxQueued} bytes, cap ${cap}`);
  const rec = f.server.processes.list()[0]!;
  assertEquals(rec.exit, null, "the process finished although its output was not read");
  // Now read everything: all bytes arrive, in seq order, then the exit.
  let bytes = 0;
  let lastSeq = 0;
  let exit: Msg | undefined;
  while (!exit) {
    const n = await c.next();
    if (n.method === "output") {
      const p = n.params as Msg;
      assertEquals(p.seq, lastSeq + 1);
      lastSeq = p.seq as number;
      bytes += Uint8Array.fromBase64(p.data as string).length;
    } else if (n.method === "exit") exit = n.params as Msg;
  }
  assertEquals([bytes, exit.code], [total, 0]);
});

Deno.test("control - a checkpoint name the store would refuse fails here, before the backend", async () => {
  const asked: string[] = [];
  await using f = await startControl({
    backend: {
      checkpoint: (name) => {
        asked.push(name);
        return Promise.reject(new Error("not reached"));
      },
    },
  });
  await using c = await RawClient.connect(f.controlSocket);
  await c.next();
  for (const [id, name] of [[1, "x".repeat(200)], [2, "../escape"], [3, "a..b"]] as const) {
    await c.sendLine(req(id, "checkpoint", { name }));
    const error = (await c.response(id)).error as Msg;
    assertEquals(error.code, -32602, JSON.stringify(error));
  }
  assertEquals(asked, []);
});
