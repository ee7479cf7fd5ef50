/**
 * End-to-end tests of `shuru run` and `shuru checkpoint create`: real guests booted under TCG
 * by the real CLI, disks served by our NBD server from the real store.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { qemuProcessesMentioning, requireTool, shuruCommandLine, TestHome } from "./_shuru.ts";

await requireTool("qemu-system-x86_64", "qemu-system-x86");

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function instanceDirs(home: TestHome): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(join(home.dir, "instances")))).map((e) => e.name);
  } catch {
    return [];
  }
}

Deno.test("run - output, separate streams and exit code come back", async () => {
  await using home = await TestHome.create();
  const r = await home.run(["run", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7"]);
  assertEquals(r.code, 7, r.stderr);
  assertEquals(r.stdout, "hello\n");
  assert(r.stderr.includes("oops"), r.stderr);
  assert(!r.stderr.includes("hello"), r.stderr);
  assertEquals(await instanceDirs(home), [], "instance folder removed");
});

Deno.test("run - stdin is piped through and the disk resets between runs", async () => {
  await using home = await TestHome.create();
  const w = await home.run(["run", "--", "sh", "-c", "cat > /root/kept; cat /root/kept"], {
    stdin: "from the host\n",
  });
  assertEquals(w.code, 0, w.stderr);
  assertEquals(w.stdout, "from the host\n");
  const r = await home.run(["run", "--", "sh", "-c", "test -e /root/kept; echo $?"]);
  assertEquals(r.stdout.trim(), "1", "a file written in one run is gone in the next");
});

Deno.test("checkpoint create - run --from sees the file; a checkpoint of a checkpoint works; chunks are shared", async () => {
  await using home = await TestHome.create();
  const c1 = await home.run([
    "checkpoint",
    "create",
    "one",
    "--",
    "sh",
    "-c",
    "echo first > /root/one.txt",
  ]);
  assertEquals(c1.code, 0, c1.stderr);
  const again = await home.run(["checkpoint", "create", "one", "--", "true"]);
  assertEquals(again.code, 2, "an existing name is refused");
  assert(again.stderr.includes("already exists"), again.stderr);

  const c2 = await home.run([
    "checkpoint",
    "create",
    "two",
    "--from",
    "one",
    "--",
    "sh",
    "-c",
    "cat /root/one.txt && echo second > /root/two.txt",
  ]);
  assertEquals(c2.code, 0, c2.stderr);
  assertEquals(c2.stdout, "first\n");
  const r = await home.run(["run", "--from", "two", "--", "cat", "/root/one.txt", "/root/two.txt"]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, "first\nsecond\n");

  // Both checkpoints hold the whole base image; what each adds on its own is small.
  const inspect = async (name: string) =>
    JSON.parse((await home.run(["checkpoint", "inspect", name, "--json"])).stdout);
  const one = await inspect("one");
  const two = await inspect("two");
  assert(one.usedBytes > 100 * 1024 * 1024, `base blocks referenced: ${one.usedBytes}`);
  assert(two.uniqueBytes < 32 * 1024 * 1024, `two adds only its own blocks: ${two.uniqueBytes}`);
  assert(one.uniqueBytes < 32 * 1024 * 1024, `one adds only its own blocks: ${one.uniqueBytes}`);
});

Deno.test("run --mount - read-only mounts are readable and guest writes never reach the host; :rw writes do", async () => {
  await using home = await TestHome.create();
  const shared = await Deno.makeTempDir({ prefix: "shuru-mount-" });
  try {
    await Deno.writeTextFile(join(shared, "in.txt"), "host data\n");
    const ro = await home.run([
      "run",
      "--mount",
      `${shared}:/work`,
      "--",
      "sh",
      "-c",
      "cat /work/in.txt && echo guest > /work/in.txt && echo new > /work/new.txt && cat /work/in.txt",
    ]);
    assertEquals(ro.code, 0, ro.stderr);
    assertEquals(ro.stdout, "host data\nguest\n");
    assertEquals(await Deno.readTextFile(join(shared, "in.txt")), "host data\n");
    assertEquals(await Array.fromAsync(Deno.readDir(shared)).then((e) => e.length), 1);

    const refused = await home.run(["run", "--mount", `${shared}:/work:rw`, "--", "true"]);
    assertEquals(refused.code, 2);
    assert(refused.stderr.includes("--allow-host-writes"), refused.stderr);

    const rw = await home.run([
      "run",
      "--allow-host-writes",
      "--mount",
      `${shared}:/work:rw`,
      "--",
      "sh",
      "-c",
      "echo from guest > /work/out.txt",
    ]);
    assertEquals(rw.code, 0, rw.stderr);
    assertEquals(await Deno.readTextFile(join(shared, "out.txt")), "from guest\n");
  } finally {
    await Deno.remove(shared, { recursive: true });
  }
});

Deno.test("run -p - a guest http.server is reachable from the host (forwarded after a warm start); SIGINT leaves nothing behind", async () => {
  await requireTool("curl", "curl");
  await using home = await TestHome.create();
  const port = freePort();
  const child = home.spawn([
    "run",
    "-v",
    "-p",
    `${port}:8000`,
    "--",
    "sh",
    "-c",
    "cd /tmp && echo served-by-guest > f.txt && exec python3 -m http.server 8000",
  ]);
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  const stderrText = (async () => {
    let all = "";
    for await (const c of stderr) all += c;
    return all;
  })();
  void child.stdout.cancel();
  let body = "";
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const out = await new Deno.Command("curl", {
      args: ["-sf", "--max-time", "5", `http://127.0.0.1:${port}/f.txt`],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (out.success) {
      body = new TextDecoder().decode(out.stdout);
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const instances = await instanceDirs(home);
  child.kill("SIGINT");
  const status = await child.status;
  const err = await stderrText;
  assertEquals(body, "served-by-guest\n", err);
  assert(err.includes("shuru: warm start"), err);
  assertEquals(instances.length, 1, "one instance while running");
  assertEquals(status.code, 130, err);
  assertEquals(await instanceDirs(home), [], "instance folder removed after Ctrl-C");
  assertEquals(await qemuProcessesMentioning(join(home.dir, "instances")), [], "no QEMU left");
});

Deno.test("run - an interactive shell on a PTY answers tty and stty size", async () => {
  await requireTool("tmux", "tmux");
  await using home = await TestHome.create();
  const session = `shuru-test-${crypto.randomUUID().slice(0, 8)}`;
  const envArgs = Object.entries(home.env()).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
  const tmux = (...args: string[]) =>
    new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  const cmd = [...shuruCommandLine(), "run"].map((a) => `'${a}'`).join(" ");
  const started = await tmux(
    "new-session",
    "-d",
    "-s",
    session,
    "-x",
    "100",
    "-y",
    "30",
    ...envArgs,
    `${cmd}; echo SHURU-EXIT=$?; sleep 30`,
  );
  assert(started.success, new TextDecoder().decode(started.stderr));
  const screen = async () =>
    new TextDecoder().decode((await tmux("capture-pane", "-p", "-t", session)).stdout);
  const waitFor = async (re: RegExp, ms: number) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const text = await screen();
      if (re.test(text)) return text;
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error(`timed out waiting for ${re}; screen:\n${await screen()}`);
  };
  try {
    // capture-pane drops trailing blanks, so the prompt is a bare "#".
    await waitFor(/^[#$] ?$/m, 300_000);
    await tmux("send-keys", "-t", session, "tty; stty size; echo typed-$((6*7))", "Enter");
    const text = await waitFor(/typed-42/, 30_000);
    assert(/\/dev\/pts\/\d+/.test(text), text);
    assert(/^30 100$/m.test(text), text);
    await tmux("resize-window", "-t", session, "-x", "120", "-y", "40");
    // The new size travels tmux -> shuru -> agent -> guest PTY: ask until the guest has it.
    for (let tries = 0;; tries++) {
      await tmux("send-keys", "-t", session, "stty size", "Enter");
      try {
        await waitFor(/^40 120$/m, 5_000);
        break;
      } catch (err) {
        if (tries === 20) throw err;
      }
    }
    await tmux("send-keys", "-t", session, "exit 3", "Enter");
    await waitFor(/SHURU-EXIT=3/, 60_000);
  } finally {
    await tmux("kill-session", "-t", session);
  }
});

Deno.test("run - a malformed shuru.json is one clear line", async () => {
  await using home = await TestHome.create();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "shuru.json"), '{ "cpus": 2, ');
    const r = await home.run(["run", "--", "true"], { cwd: dir });
    assertEquals(r.code, 2);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assert(lines[0]!.startsWith("shuru: ") && lines[0]!.includes("invalid JSON"), r.stderr);
    await Deno.writeTextFile(join(dir, "shuru.json"), '{ "cpu": 2 }');
    const u = await home.run(["run", "--", "true"], { cwd: dir });
    assert(u.stderr.includes('unknown key "cpu"'), u.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run - a failure on the boot path is one line and a non-zero exit, no stack trace", async () => {
  await using home = await TestHome.create();
  // The guest assets' folder cannot be made: a regular file stands in its way.
  const file = join(home.dir, "a-file");
  await Deno.writeTextFile(file, "");
  const r = await home.run(["run", "--", "true"], { env: { SHURU_ASSETS: join(file, "assets") } });
  assert(r.code !== 0, r.stderr);
  const lines = r.stderr.trim().split("\n").filter((l) => !/^[✓…]|^ {2}/.test(l));
  assertEquals(lines.length, 1, r.stderr);
  assert(lines[0]!.startsWith("shuru: ") && lines[0]!.includes("a-file"), r.stderr);
});
