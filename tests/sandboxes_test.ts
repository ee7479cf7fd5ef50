/**
 * Named sandboxes end to end with real guests (TCG): `shuru start` → `ps` → `exec` → `cp` →
 * live `checkpoint save` while the guest writes → `run --from` and `e2fsck` of the saved disk →
 * `stop`; a SIGKILLed supervisor leaves no QEMU; another user cannot open the control socket;
 * `shuru run --stdio` driven with the reference's (the Rust shuru for macOS) messages. Boots are slow here, so each test
 * shares one sandbox across its steps.
 */
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/stdio"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import {
  type CliResult,
  qemuProcessesMentioning,
  requireTool,
  shuruCommandLine,
  TestHome,
} from "./_shuru.ts";
import { LineReader } from "./_lines.ts";
import { testDeadline } from "./_deadline.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // A zombie is as good as gone.
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** The session id of `pid`, from `ps` (procps here, the BSD one on macOS). */
async function sessionOf(pid: number): Promise<number> {
  const out = await new Deno.Command("ps", { args: ["-o", "sid=", "-p", String(pid)] }).output();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

interface PsRow {
  name: string;
  state: string;
  supervisor: { pid: number };
  instanceDir: string;
  controlSocket: string;
  cpus: number;
  memoryMiB: number;
}

async function ps(home: TestHome): Promise<PsRow[]> {
  return JSON.parse(ok(await home.run(["ps", "--json"]), "ps").stdout);
}

// One sandbox through many steps, each a CLI run: far longer than a test that boots once.
testDeadline(1200, "sandboxes - start, ps, exec, cp, live checkpoint, run --from, fsck, stop");
Deno.test("sandboxes - start, ps, exec, cp, live checkpoint, run --from, fsck, stop", async (t) => {
  await requireTool("qemu-img", "qemu-utils");
  await requireTool("e2fsck", "e2fsprogs");
  await requireTool("setpriv", "util-linux");
  await requireTool("/usr/bin/python3", "python3");
  await requireTool("ps", "procps");
  await using home = await TestHome.create();
  let row: PsRow | undefined;
  try {
    await t.step("start prints the name once the agent answers; ps lists it", async () => {
      const r = ok(await home.run(["start", "--name", "box", "--memory", "1024"]), "start");
      assertEquals(r.stdout.trim(), "box");
      const rows = await ps(home);
      assertEquals(rows.length, 1);
      row = rows[0]!;
      assertEquals([row.name, row.state, row.cpus, row.memoryMiB], ["box", "running", 2, 1024]);
      assert(alive(row.supervisor.pid), "supervisor runs");
      assertEquals(await sessionOf(row.supervisor.pid), row.supervisor.pid, "own session");
      const text = ok(await home.run(["ps"]), "ps").stdout;
      assert(/^NAME\s+PID\s+STATE\s+UPTIME/.test(text) && text.includes("box"), text);
      // A second sandbox of the same name is refused.
      const again = await home.run(["start", "--name", "box"]);
      assert(again.code !== 0 && again.stderr.includes("is running"), again.stderr);
    });

    await t.step("the control socket is 0600 and another user cannot connect", async () => {
      const info = await Deno.stat(row!.controlSocket);
      assertEquals(info.mode! & 0o777, 0o600);
      const probe = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n" +
        "try:\n  s.connect(sys.argv[1]); print('connected')\n" +
        "except PermissionError: print('denied')\n";
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=nobody",
          "--regid=nogroup",
          "--clear-groups",
          "/usr/bin/python3",
          "-c",
          probe,
          row!.controlSocket,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(new TextDecoder().decode(out.stdout).trim(), "denied");
    });

    await t.step("exec: exit codes, separate streams, stdin, timeout", async () => {
      const r = await home.run(["exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
      assertEquals([r.code, r.stdout, r.stderr], [7, "out\n", "err\n"]);
      const s = await home.run(["exec", "box", "--", "sh", "-c", "tr a-z A-Z; exit 3"], {
        stdin: "hello\n",
      });
      assertEquals([s.code, s.stdout], [3, "HELLO\n"]);
      const e = await home.run([
        "exec",
        "-e",
        "A=1",
        "--cwd",
        "/tmp",
        "box",
        "--",
        "sh",
        "-c",
        'echo "$A $(pwd)"',
      ]);
      assertEquals(e.stdout, "1 /tmp\n");
      const to = await home.run(["exec", "--timeout", "1s", "box", "--", "sleep", "30"]);
      assertEquals(to.code, 124);
      const nf = await home.run(["exec", "nosuch", "--", "true"]);
      assert(nf.code !== 0 && nf.stderr.includes("running sandboxes: box"), nf.stderr);
    });

    await t.step("shell: bash on a PTY; its exit code is ours", async () => {
      const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
      const line = [...shuruCommandLine(), "shell", "box"].map(quote).join(" ");
      const child = new Deno.Command("script", {
        args: ["-qec", line, "/dev/null"],
        env: home.env(),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = new Response(child.stdout).text();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("echo $((6*7)); tty; exit 5\n"));
      // stdin stays open until the shell exits (EOF would end the session early).
      const status = await child.status;
      await writer.close().catch(() => {});
      await child.stderr.cancel();
      const text = await out;
      assertEquals(status.code, 5, text);
      assert(/(^|[^0-9])42\r*\n/.test(text) && /\/dev\/pts\/\d+/.test(text), text);
    });

    await t.step("cp: 100 MiB in and out with matching hashes", async () => {
      const data = new Uint8Array(100 * 1024 * 1024);
      for (let o = 0; o < data.length; o += 65536) {
        crypto.getRandomValues(data.subarray(o, o + 65536));
      }
      const hash = await sha256Hex(data);
      const src = join(home.dir, "big.bin");
      await Deno.writeFile(src, data);
      ok(await home.run(["cp", src, "box:/root/"]), "cp in");
      const guestHash =
        ok(await home.run(["exec", "box", "--", "sha256sum", "/root/big.bin"]), "sha")
          .stdout.split(" ")[0];
      assertEquals(guestHash, hash);
      const back = join(home.dir, "back.bin");
      ok(await home.run(["cp", "box:/root/big.bin", back]), "cp out");
      assertEquals(await sha256Hex(await Deno.readFile(back)), hash);
      await Deno.remove(src);
      await Deno.remove(back);
      ok(await home.run(["exec", "box", "--", "rm", "/root/big.bin"]), "rm");
      // Folders travel as a tar stream and keep their name inside an existing folder.
      const tree = join(home.dir, "tree");
      await Deno.mkdir(join(tree, "sub"), { recursive: true });
      await Deno.writeTextFile(join(tree, "sub", "f.txt"), "nested\n");
      ok(await home.run(["cp", tree, "box:/root/"]), "cp dir in");
      const cat = await home.run(["exec", "box", "--", "cat", "/root/tree/sub/f.txt"]);
      assertEquals(cat.stdout, "nested\n");
      ok(await home.run(["cp", "box:/root/tree", join(home.dir, "tree2")]), "cp dir out");
      assertEquals(await Deno.readTextFile(join(home.dir, "tree2", "sub", "f.txt")), "nested\n");
    });

    await t.step(
      "live checkpoint save while a process appends; the sandbox keeps running",
      async () => {
        ok(
          await home.run([
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "nohup sh -c 'i=0; while :; do i=$((i+1)); echo \"line $i\" >> /root/log.txt; done' " +
            ">/dev/null 2>&1 &",
          ]),
          "appender",
        );
        // Lines counted in the guest (0 while the file does not exist yet).
        const count = async () =>
          Number(
            ok(await home.run(["exec", "box", "--", "sh", "-c", "cat /root/log.txt | wc -l"]), "wc")
              .stdout.trim(),
          );
        // The appender has started (however long that took) before the save.
        await waitFor(async () => (await count()) > 0, 120_000, "the appender's first line");
        const r = ok(await home.run(["checkpoint", "save", "live1", "--json"]), "checkpoint save");
        const again = await home.run(["checkpoint", "save", "live1"]);
        assert(again.code !== 0 && again.stderr.includes("already exists"), again.stderr);
        const info = JSON.parse(r.stdout);
        assert(typeof info.pause_ms === "number" && info.pause_ms >= 0, r.stdout);
        console.log(`live checkpoint: guest paused ${info.pause_ms} ms, total ${info.total_ms} ms`);
        // Still running, still appending (the count grows, at whatever pace).
        const a = await count();
        await waitFor(async () => (await count()) > a, 120_000, `more than ${a} lines`);
        assertEquals((await ps(home))[0]?.state, "running");
      },
    );

    await t.step("the saved disk passes e2fsck -fn", async () => {
      const sock = join(home.dir, "ck.sock");
      const server = home.spawn([
        "nbd",
        "serve",
        "--socket",
        sock,
        "--from",
        "live1",
        "--read-only",
      ]);
      try {
        await waitFor(
          async () => await Deno.stat(sock).then(() => true, () => false),
          60_000,
          "nbd",
        );
        const raw = join(home.dir, "ck.raw");
        const conv = await new Deno.Command("qemu-img", {
          args: ["convert", "-f", "raw", "-O", "raw", `nbd+unix:///?socket=${sock}`, raw],
          stderr: "piped",
        }).output();
        assert(conv.success, new TextDecoder().decode(conv.stderr));
        const fsck = await new Deno.Command("e2fsck", {
          args: ["-fn", raw],
          stdout: "piped",
          stderr: "piped",
        })
          .output();
        const text = new TextDecoder().decode(fsck.stdout) + new TextDecoder().decode(fsck.stderr);
        assertEquals(fsck.code, 0, `e2fsck:\n${text}`);
        await Deno.remove(raw);
      } finally {
        server.kill("SIGTERM");
        await server.output();
      }
    });

    await t.step(
      "run --from sees a consistent file: whole lines, numbered without gaps",
      async () => {
        const check = 'awk \'{ if ($0 != "line " NR) { print "BAD " NR ": " $0; exit 1 } } ' +
          "END { print NR }' /root/log.txt";
        const r = ok(
          await home.run(["run", "--from", "live1", "--", "sh", "-c", check]),
          "run --from",
        );
        assert(Number(r.stdout.trim()) > 0, r.stdout);
      },
    );

    await t.step("stop --save: saved, then the supervisor, QEMU and instance go away", async () => {
      const stop = ok(await home.run(["stop", "box", "--save", "final"]), "stop --save");
      assert(stop.stderr.includes("saved checkpoint final"), stop.stderr);
      assert(!alive(row!.supervisor.pid), "supervisor gone");
      assertEquals(await qemuProcessesMentioning(row!.instanceDir), []);
      assertEquals(await Deno.stat(row!.instanceDir).then(() => true, () => false), false);
      assertEquals(await ps(home), []);
      const list = JSON.parse(ok(await home.run(["checkpoint", "list", "--json"]), "list").stdout);
      assert(list.some((c: { name: string }) => c.name === "final"), JSON.stringify(list));
    });
  } finally {
    if (row && alive(row.supervisor.pid)) Deno.kill(row.supervisor.pid, "SIGKILL");
  }
});

Deno.test("sandboxes - a SIGKILLed supervisor takes QEMU with it; ps and prune clean up", async () => {
  await using home = await TestHome.create();
  ok(await home.run(["start", "--name", "victim", "--memory", "512"]), "start");
  const [row] = await ps(home);
  assert(row, "listed");
  const owner = JSON.parse(await Deno.readTextFile(join(row.instanceDir, "owner.json")));
  const qemuPid = owner.vm.pid as number;
  assert(alive(qemuPid), "QEMU runs");
  try {
    Deno.kill(row.supervisor.pid, "SIGKILL");
    await waitFor(() => Promise.resolve(!alive(qemuPid)), 15_000, "QEMU to die with its parent");
    assertEquals(await qemuProcessesMentioning(row.instanceDir), []);
    assertEquals(await ps(home), []);
    const pr = ok(await home.run(["prune"]), "prune");
    assert(pr.stdout.includes("removed instance victim"), pr.stdout);
    assertEquals(await Deno.stat(row.instanceDir).then(() => true, () => false), false);
  } finally {
    if (alive(qemuPid)) Deno.kill(qemuPid, "SIGKILL");
  }
});

Deno.test("sandboxes - --idle-timeout stops a sandbox nobody uses, leaving nothing", async () => {
  await using home = await TestHome.create();
  const started = ok(
    await home.run([
      "start",
      "--name",
      "idler",
      "--memory",
      "512",
      "--idle-timeout",
      "10s",
      "--json",
    ]),
    "start",
  );
  const row = JSON.parse(started.stdout) as PsRow;
  assertEquals([row.name, row.state], ["idler", "running"]);
  const owner = JSON.parse(await Deno.readTextFile(join(row.instanceDir, "owner.json")));
  const qemuPid = owner.vm.pid as number;
  try {
    await waitFor(() => Promise.resolve(!alive(row.supervisor.pid)), 90_000, "the idle stop");
    assert(!alive(qemuPid), "QEMU gone");
    assertEquals(await Deno.stat(row.instanceDir).then(() => true, () => false), false);
    assertEquals(await ps(home), []);
    // Record and log removed.
    assertEquals(await Array.fromAsync(Deno.readDir(join(home.dir, "sandboxes"))), []);
  } finally {
    if (alive(row.supervisor.pid)) Deno.kill(row.supervisor.pid, "SIGKILL");
  }
});

Deno.test("run --stdio - the reference's messages; checkpoint does not end the session", async () => {
  await using home = await TestHome.create();
  const [exe, ...args] = shuruCommandLine();
  const child = new Deno.Command(exe!, {
    args: [...args, "run", "--stdio", "--memory", "512"],
    env: home.env(),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const writer = child.stdin.getWriter();
  const lines = new LineReader(child.stdout);
  const next = () =>
    lines.nextJson(async () => new Error(`stdout ended; stderr:\n${await stderr}`));
  const send = (line: string) => writer.write(new TextEncoder().encode(line + "\n"));
  const response = async (id: number) => {
    while (true) {
      const m = await next();
      if (m.id === id) return m;
    }
  };
  const b64 = (s: string) => new TextEncoder().encode(s).toBase64();
  try {
    assertEquals(await next(), { jsonrpc: "2.0", method: "ready" });
    await send('{"jsonrpc":"2.0","id":1,"method":"exec","params":{"argv":["echo","hello"]}}');
    const r1 = (await response(1)).result as Record<string, unknown>;
    assertEquals([r1.stdout, r1.stderr, r1.exit_code], ["hello\n", "", 0]);
    await send(
      `{"jsonrpc":"2.0","id":2,"method":"write_file","params":{"path":"/root/f.txt","content":"${
        b64("saved")
      }"}}`,
    );
    assert((await response(2)).result, "write_file");
    await send('{"jsonrpc":"2.0","id":3,"method":"checkpoint","params":{"name":"viastdio"}}');
    const r3 = await response(3);
    assert(r3.result, JSON.stringify(r3));
    assertEquals((r3.result as Record<string, unknown>).name, "viastdio");
    // The session goes on after a checkpoint (the reference ended it).
    await send('{"jsonrpc":"2.0","id":4,"method":"exec","params":{"argv":["cat","/root/f.txt"]}}');
    assertEquals(((await response(4)).result as Record<string, unknown>).stdout, "saved");
    await send('{"jsonrpc":"2.0","id":5,"method":"nosuch"}');
    assertEquals(((await response(5)).error as { code: number }).code, -32601);
    await writer.close();
    const status = await child.status;
    assertEquals(status.code, 0, await stderr);
    const list = JSON.parse(ok(await home.run(["checkpoint", "list", "--json"]), "list").stdout);
    assert(list.some((c: { name: string }) => c.name === "viastdio"), JSON.stringify(list));
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await stderr.catch(() => "");
  }
});

Deno.test("SDK - Sandbox.create starts a named sandbox; exec, files, live checkpoint; dispose stops it", async () => {
  await using home = await TestHome.create();
  const { Sandbox } = await import("../mod.ts");
  const env = home.env();
  // The SDK runs `shuru start`; give it this test's assets and accelerator.
  const shuru = [
    "/usr/bin/env",
    `SHURU_ASSETS=${env.SHURU_ASSETS}`,
    `SHURU_ACCEL=${env.SHURU_ACCEL}`,
    ...shuruCommandLine(),
  ];
  let supervisorPid: number | undefined;
  {
    await using sb = await Sandbox.create({
      home: home.dir,
      name: "sdkbox",
      memoryMiB: 512,
      shuru,
    });
    const [row] = await ps(home);
    assertEquals(row?.name, "sdkbox");
    supervisorPid = row!.supervisor.pid;
    const r = await sb.exec("echo hi; echo oops >&2; exit 4", { stdin: "ignored" });
    assertEquals([r.stdout, r.stderr, r.exitCode, r.timedOut], ["hi\n", "oops\n", 4, false]);
    await sb.fs.writeTextFile("/root/sdk.txt", "from the sdk");
    assertEquals(await sb.fs.readTextFile("/root/sdk.txt"), "from the sdk");
    const ck = await sb.checkpoint("sdkck");
    assert(typeof ck.pause_ms === "number", JSON.stringify(ck));
    // A second client on the same sandbox sees the same files.
    await using other = await Sandbox.connect("sdkbox", { home: home.dir });
    assertEquals(await other.fs.readTextFile("/root/sdk.txt"), "from the sdk");
  }
  // Disposing the creating client stops the sandbox.
  await waitFor(() => Promise.resolve(!alive(supervisorPid!)), 60_000, "the sandbox to stop");
  assertEquals(await ps(home), []);
  const list = JSON.parse(ok(await home.run(["checkpoint", "list", "--json"]), "list").stdout);
  assert(list.some((c: { name: string }) => c.name === "sdkck"), JSON.stringify(list));
});

Deno.test("shuru mcp - sandbox_create boots a real guest; exec in it; it stops when mcp exits", async () => {
  await using home = await TestHome.create();
  const [exe, ...args] = shuruCommandLine();
  const transport = new StdioClientTransport({
    command: exe!,
    args: [...args, "mcp"],
    stderr: "pipe",
    env: { ...Deno.env.toObject(), ...home.env() },
  });
  const client = new Client({ name: "shuru-test", version: "1" });
  await client.connect(transport);
  type Result = { structuredContent?: Record<string, unknown>; isError?: boolean };
  const call = async (name: string, a: Record<string, unknown>) =>
    (await client.callTool({ name, arguments: a })) as Result;
  let supervisorPid: number | undefined;
  try {
    const created = await call("sandbox_create", { name: "mcpbox", memory_mib: 512 });
    assertEquals(created.isError, undefined, JSON.stringify(created));
    const id = created.structuredContent?.sandbox_id as string;
    const [row] = await ps(home);
    assertEquals(row?.name, id);
    supervisorPid = row!.supervisor.pid;
    const r = await call("exec", { command: "uname -m; exit 3", sandbox_id: id });
    assertEquals([r.structuredContent?.stdout, r.structuredContent?.exit_code], ["x86_64\n", 3]);
  } finally {
    await client.close();
  }
  await waitFor(() => Promise.resolve(!alive(supervisorPid!)), 60_000, "the sandbox to stop");
  assertEquals(await ps(home), []);
});
