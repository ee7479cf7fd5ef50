import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { Mux } from "../proto/mod.ts";
import { findVirtioPort, parseArgs, processBaseEnv } from "./main.ts";

Deno.test("parseArgs - listen, port, defaults and errors", () => {
  assertEquals(parseArgs([]), { kind: "port", name: "shuru.agent" });
  assertEquals(parseArgs(["--port", "other.port"]), { kind: "port", name: "other.port" });
  assertEquals(parseArgs(["--listen", "unix:/tmp/a.sock"]), {
    kind: "listen",
    path: "/tmp/a.sock",
  });
  assertEquals(parseArgs(["--listen=unix:/tmp/b.sock"]), { kind: "listen", path: "/tmp/b.sock" });
  assertThrows(() => parseArgs(["--listen", "tcp:1234"]), "only unix:PATH");
  assertThrows(() => parseArgs(["--listen"]), "needs a value");
  assertThrows(() => parseArgs(["--frobnicate"]), "unknown");
});

Deno.test("findVirtioPort - matches the name file of a virtio-ports directory", async () => {
  // The same layout as /sys/class/virtio-ports (one folder per port with a `name` file).
  const root = await Deno.makeTempDir({ prefix: "shuru-vports-" });
  try {
    await Deno.mkdir(`${root}/vport0p0`);
    await Deno.writeTextFile(`${root}/vport0p0/name`, "org.qemu.guest_agent.0\n");
    await Deno.mkdir(`${root}/vport1p1`);
    await Deno.writeTextFile(`${root}/vport1p1/name`, "shuru.agent\n");
    await Deno.mkdir(`${root}/vport1p2`); // no name file
    assertEquals(findVirtioPort("shuru.agent", root), "/dev/vport1p1");
    assertEquals(findVirtioPort("missing", root), null);
    assertEquals(findVirtioPort("shuru.agent", `${root}/nope`), null);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("main - listen mode: shutdown request syncs, answers, and the agent exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-main-" });
  const socket = `${dir}/agent.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      new URL("./main.ts", import.meta.url).pathname,
      "--listen",
      `unix:${socket}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    let conn: Deno.UnixConn | undefined;
    for (let i = 0; i < 600 && !conn; i++) {
      try {
        conn = await Deno.connect({ transport: "unix", path: socket });
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert(conn, "agent did not start listening");
    const mux = await Mux.connect(conn, { role: "host", version: "test" });
    const s = mux.open({ op: "shutdown" });
    assertEquals(await s.result, {});
    await mux.closed;
    const status = await child.status;
    const log = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    assertEquals(status.code, 0, log);
    assert(log.includes("shutdown"), log);
    let exists = true;
    try {
      await Deno.lstat(socket);
    } catch {
      exists = false;
    }
    assertEquals(exists, false, "socket removed on exit");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await child.stderr.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("processBaseEnv - drops Deno's node_compat_bin from PATH and DENO_DIR, keeps the rest", () => {
  assertEquals(
    processBaseEnv({
      PATH: "/var/cache/shuru/deno/node_compat_bin:/usr/bin:/bin",
      HOME: "/root",
      DENO_DIR: "/var/cache/shuru/deno",
    }),
    { PATH: "/usr/bin:/bin", HOME: "/root" },
  );
  assertEquals(processBaseEnv({ HOME: "/x" }), { HOME: "/x" });
});
