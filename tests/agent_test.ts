/**
 * End-to-end tests of exec through the real guest agent over a Unix socket: the host `Sandbox`
 * on one end, `guest/main.ts --listen` as a subprocess on the other.
 */

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { startAgent, text } from "./_agent_fixture.ts";
import { FrameDecoder, FrameType, HELLO_MAGIC, PROTOCOL_VERSION } from "../proto/mod.ts";
import { encodeFrame, encodeJson } from "../proto/frame.ts";
import { ConnectionError, NotFoundError } from "../sandbox/mod.ts";

const enc = new TextEncoder();

Deno.test("agent exec", async (t) => {
  await using agent = await startAgent();
  await using sb = await agent.connect();

  await t.step("echo", async () => {
    const out = await sb.exec(["echo", "hello", "world"]);
    assertEquals(text(out.stdout), "hello world\n");
    assertEquals(out.stderr.length, 0);
    assertEquals(out.exitCode, 0);
    assertEquals(out.success, true);
  });

  await t.step("stdout and stderr are separate", async () => {
    const out = await sb.exec(["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"]);
    assertEquals(text(out.stdout), "out1\nout2\n");
    assertEquals(text(out.stderr), "err1\nerr2\n");
  });

  await t.step("exit codes 0, 7 and death by signal as 128+N", async () => {
    assertEquals((await sb.exec(["true"])).exitCode, 0);
    assertEquals((await sb.exec(["sh", "-c", "exit 7"])).exitCode, 7);
    const killed = await sb.exec(["sh", "-c", "kill -KILL $$"]);
    assertEquals(killed.exitCode, 137);
    assertEquals(killed.signal, "SIGKILL");
    const termed = await sb.exec(["sh", "-c", "kill -TERM $$"]);
    assertEquals(termed.exitCode, 143);
  });

  await t.step("kill() signals the whole process group", async () => {
    const proc = sb.spawn(["sh", "-c", "sleep 300 & sleep 300; wait"]);
    const pid = await proc.pid;
    assert(pid > 0);
    await proc.kill("SIGTERM");
    const status = await proc.wait();
    assertEquals(status.exitCode, 143);
    // No member of the group survives (zombies waiting for a reaper do not count).
    const deadline = Date.now() + 60_000;
    let alive = "";
    do {
      const ps = await sb.exec(["ps", "-e", "-o", "pgid=,stat=,pid="]);
      alive = text(ps.stdout).split("\n").filter((l) => {
        const [pgid, stat] = l.trim().split(/\s+/);
        return pgid === String(pid) && !stat?.startsWith("Z");
      }).join("\n");
      if (alive === "") break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
    assertEquals(alive, "");
  });

  await t.step("stdin is streamed and EOF arrives", async () => {
    const proc = sb.spawn(["wc", "-c"], { stdin: "piped" });
    const w = proc.stdin.getWriter();
    const chunk = new Uint8Array(1 << 20).fill(65);
    for (let i = 0; i < 10; i++) await w.write(chunk);
    await w.close();
    const out = await proc.output();
    assertEquals(text(out.stdout).trim(), String(10 << 20));
    const echoed = await sb.exec(["cat"], { stdin: "line1\nline2\n" });
    assertEquals(text(echoed.stdout), "line1\nline2\n");
  });

  await t.step("interactive input to a long-running process, several at once", async () => {
    const procs = [0, 1, 2].map(() => sb.spawn(["cat"], { stdin: "piped" }));
    const writers = procs.map((p) => p.stdin.getWriter());
    const readers = procs.map((p) => p.stdout.getReader());
    for (let round = 0; round < 3; round++) {
      for (const [i, w] of writers.entries()) await w.write(enc.encode(`p${i} r${round}\n`));
      for (const [i, r] of readers.entries()) {
        let got = "";
        while (!got.endsWith("\n")) got += text((await r.read()).value!);
        assertEquals(got, `p${i} r${round}\n`);
      }
    }
    for (const w of writers) await w.close();
    for (const r of readers) assertEquals((await r.read()).done, true);
    for (const p of procs) assertEquals((await p.wait()).exitCode, 0);
  });

  await t.step("50 concurrent execs", async () => {
    const outs = await Promise.all(
      Array.from({ length: 50 }, (_, i) => sb.exec(["sh", "-c", `echo ${i}; echo e${i} >&2`])),
    );
    for (const [i, out] of outs.entries()) {
      assertEquals(text(out.stdout), `${i}\n`);
      assertEquals(text(out.stderr), `e${i}\n`);
      assertEquals(out.exitCode, 0);
    }
  });

  await t.step("missing binary gives 127 and a message", async () => {
    const out = await sb.exec(["/no/such/program-xyz", "arg"]);
    assertEquals(out.exitCode, 127);
    assert(text(out.stderr).includes("/no/such/program-xyz"), text(out.stderr));
    const inPath = await sb.exec(["no-such-program-xyz"]);
    assertEquals(inPath.exitCode, 127);
    assert(text(inPath.stderr).includes("no-such-program-xyz"), text(inPath.stderr));
  });

  await t.step("cwd and env", async () => {
    const out = await sb.exec(["sh", "-c", 'pwd; echo "$SHURU_A|$SHURU_B"'], {
      cwd: agent.dir,
      env: { SHURU_A: "x y", SHURU_B: "é=1" },
    });
    assertEquals(text(out.stdout), `${agent.dir}\nx y|é=1\n`);
    const err = await assertRejects(() => sb.exec(["pwd"], { cwd: `${agent.dir}/missing` }));
    assert(err instanceof NotFoundError, String(err));
  });

  await t.step("an aborted exec is killed", async () => {
    const ac = new AbortController();
    const proc = sb.spawn(["sleep", "300"], { signal: ac.signal });
    await proc.pid;
    ac.abort(new Error("test"));
    await assertRejects(() => proc.wait(), "aborted");
    await sb.ping();
  });

  await t.step("a request the agent rejects does not break the connection", async () => {
    await assertRejects(() => sb.exec(["echo"], { cwd: "relative/dir" }), "absolute");
    assertEquals(text((await sb.exec(["echo", "still", "fine"])).stdout), "still fine\n");
  });
});

Deno.test("agent connection errors", async (t) => {
  await using agent = await startAgent();

  const hello = encodeFrame({
    type: FrameType.HELLO,
    flags: 0,
    channel: 0,
    stream: 0,
    payload: encodeJson({
      magic: HELLO_MAGIC,
      protocol: PROTOCOL_VERSION,
      role: "host",
      version: "raw-test",
      capabilities: [],
      window: 65536,
      maxFrame: 65536,
    }),
  });

  /** Sends `bytes` on a raw connection; returns the GOAWAY message and whether EOF followed. */
  async function sendRaw(bytes: Uint8Array[], closeWrite = false) {
    const conn = await Deno.connect({ transport: "unix", path: agent.socket });
    try {
      for (const b of bytes) await conn.write(b);
      if (closeWrite) await conn.closeWrite();
      const d = new FrameDecoder();
      const buf = new Uint8Array(65536);
      let goaway: string | undefined;
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        d.push(buf.slice(0, n));
        let f;
        while ((f = d.next())) {
          if (f.type === FrameType.GOAWAY) goaway = text(f.payload);
        }
      }
      return goaway;
    } finally {
      conn.close();
    }
  }

  await t.step("garbage bytes end that connection; a new one works", async () => {
    await using before = await agent.connect();
    const goaway = await sendRaw([hello, enc.encode("\xde\xad\xbe\xef garbage garbage")]);
    assert(goaway?.includes("unknown frame type"), `GOAWAY was ${goaway}`);
    // Other connections are untouched and new ones work.
    assertEquals(text((await before.exec(["echo", "a"])).stdout), "a\n");
    await using after = await agent.connect();
    assertEquals(text((await after.exec(["echo", "b"])).stdout), "b\n");
  });

  await t.step("garbage instead of HELLO", async () => {
    const goaway = await sendRaw([enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]);
    assert(goaway !== undefined, "expected GOAWAY");
    await using after = await agent.connect();
    await after.ping();
  });

  await t.step("a truncated frame at EOF ends only that connection", async () => {
    const open = encodeFrame({
      type: FrameType.OPEN,
      flags: 0,
      channel: 0,
      stream: 1,
      payload: encodeJson({ op: "exec", argv: ["true"] }),
    });
    await sendRaw([hello, open.subarray(0, 20)], true);
    // The agent logs why the connection ended (read from its stderr asynchronously).
    const deadline = Date.now() + 60_000;
    while (!/ended after 8 of/.test(agent.log()) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert(/OPEN frame: connection ended after 8 of/.test(agent.log()), agent.log());
    await using after = await agent.connect();
    assertEquals((await after.exec(["true"])).exitCode, 0);
  });

  await t.step("an oversized length field is refused", async () => {
    const header = new Uint8Array([3, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    const goaway = await sendRaw([hello, header]);
    assert(goaway?.includes("exceeds"), `GOAWAY was ${goaway}`);
  });

  await t.step(
    "pending operations fail with ConnectionError when the agent goes away",
    async () => {
      await using sb = await agent.connect();
      const proc = sb.spawn(["sleep", "300"]);
      await proc.pid;
      await sb.close();
      const err = await assertRejects(() => proc.wait());
      assert(err instanceof ConnectionError, String(err));
    },
  );
});

Deno.test("shuru exec --connect", async (t) => {
  await using agent = await startAgent();
  const main = new URL("../main.ts", import.meta.url).pathname;
  async function shuru(args: string[], stdin?: string) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", main, ...args],
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(enc.encode(stdin));
      await w.close();
    }
    const out = await child.output();
    return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
  }

  await t.step("stdout, stderr, env, cwd and the exit code", async () => {
    const r = await shuru([
      "exec",
      "--connect",
      `unix:${agent.socket}`,
      "-e",
      "A=1",
      "-e",
      "B=two",
      "--cwd",
      agent.dir,
      "--",
      "sh",
      "-c",
      'echo "$A $B"; pwd; echo oops >&2; exit 3',
    ]);
    assertEquals(r.stdout, `1 two\n${agent.dir}\n`);
    assertEquals(r.stderr, "oops\n");
    assertEquals(r.code, 3);
  });

  await t.step("stdin is forwarded when piped", async () => {
    const r = await shuru(
      ["exec", "--connect", `unix:${agent.socket}`, "--", "tr", "a-z", "A-Z"],
      "hi there\n",
    );
    assertEquals(r.stdout, "HI THERE\n");
    assertEquals(r.code, 0);
  });

  await t.step("signals become 128+N and missing programs 127", async () => {
    const k = await shuru([
      "exec",
      "--connect",
      `unix:${agent.socket}`,
      "--",
      "sh",
      "-c",
      "kill -9 $$",
    ]);
    assertEquals(k.code, 137);
    const m = await shuru(["exec", "--connect", `unix:${agent.socket}`, "--", "no-such-cmd-xyz"]);
    assertEquals(m.code, 127);
    assert(m.stderr.includes("no-such-cmd-xyz"), m.stderr);
  });

  await t.step("a closed stdout pipe gives the command SIGPIPE (141), no stack trace", async () => {
    const script = `"$0" run -A --quiet "$1" exec --connect "unix:$2" -- yes | head -1; ` +
      `exit "\${PIPESTATUS[0]}"`;
    const out = await new Deno.Command("bash", {
      args: ["-c", script, Deno.execPath(), main, agent.socket],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(text(out.stdout), "y\n");
    assertEquals(out.code, 141);
    assertEquals(text(out.stderr), "");
  });

  await t.step("bad --connect and unreachable agents are one-line errors", async () => {
    const bad = await shuru(["exec", "--connect", "tcp:1", "--", "true"]);
    assertEquals(bad.code, 2);
    assertEquals(bad.stderr, 'shuru: Cannot connect to "tcp:1": expected unix:PATH\n');
    const gone = await shuru(["exec", "--connect", `unix:${agent.dir}/nope.sock`, "--", "true"]);
    assertEquals(gone.code, 125);
    assert(gone.stderr.startsWith("shuru: Cannot connect to agent at"), gone.stderr);
  });
});
