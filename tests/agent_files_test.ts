/**
 * End-to-end tests of file operations, watch and port forwarding through the real guest agent
 * over a Unix socket (the agent runs on this host, so its "guest" paths are host paths in a
 * private temp dir, and results are checked with Deno's own fs calls).
 */

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { startAgent, text } from "./_agent_fixture.ts";
import { LineReader } from "./_lines.ts";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  IsADirectoryError,
  NotADirectoryError,
  NotEmptyError,
  NotFoundError,
  PermissionDeniedError,
  type WatchEvent,
} from "../sandbox/mod.ts";

async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

function random(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let o = 0; o < n; o += 65536) {
    crypto.getRandomValues(out.subarray(o, Math.min(n, o + 65536)));
  }
  return out;
}

Deno.test("agent files", async (t) => {
  await using agent = await startAgent();
  await using sb = await agent.connect();
  const root = `${agent.dir}/fs`;
  await Deno.mkdir(root);

  await t.step("write and read round trips of 0 B, 1 B and 5 MiB with hashes", async () => {
    for (const size of [0, 1, 5 * 1024 * 1024]) {
      const data = random(size);
      const path = `${root}/blob-${size}`;
      assertEquals(await sb.writeFile(path, data), size);
      const onDisk = await Deno.readFile(path);
      assertEquals(await sha256(onDisk), await sha256(data));
      const back = await sb.readBytes(path);
      assertEquals(back.length, size);
      assertEquals(await sha256(back), await sha256(data));
    }
  });

  await t.step("writeFile from a stream, append, createNew, mode; readFile range", async () => {
    const path = `${root}/stream.txt`;
    const n = await sb.writeFile(
      path,
      ReadableStream.from(["ab", "cd", "ef"]).pipeThrough(new TextEncoderStream()),
      { mode: 0o600 },
    );
    assertEquals(n, 6);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    await sb.writeFile(path, "gh", { append: true });
    assertEquals(await sb.readText(path), "abcdefgh");
    assertEquals(
      text(await new Response(sb.readFile(path, { offset: 2, length: 3 })).bytes()),
      "cde",
    );
    const exists = await assertRejects(() => sb.writeFile(path, "x", { createNew: true }));
    assert(exists instanceof AlreadyExistsError, String(exists));
    assertEquals(await Deno.readTextFile(path), "abcdefgh");
  });

  await t.step("file errors are typed", async () => {
    const missing = await assertRejects(() => sb.readBytes(`${root}/nope`), "nope");
    assert(missing instanceof NotFoundError, String(missing));
    const dir = await assertRejects(() => sb.readBytes(root));
    assert(dir instanceof IsADirectoryError, String(dir));
    const noParent = await assertRejects(() => sb.writeFile(`${root}/no/such/dir/f`, "x"));
    assert(noParent instanceof NotFoundError, String(noParent));
    const relative = await assertRejects(() => sb.readBytes("relative/path"), "absolute");
    assert(relative instanceof InvalidArgumentError, String(relative));
    const denied = await assertRejects(() => sb.remove("/proc/version"));
    assert(denied instanceof PermissionDeniedError, String(denied));
  });

  await t.step("mkdir", async () => {
    await sb.mkdir(`${root}/d1`);
    assert((await Deno.stat(`${root}/d1`)).isDirectory);
    await sb.mkdir(`${root}/d2/a/b`, { recursive: true });
    assert((await Deno.stat(`${root}/d2/a/b`)).isDirectory);
    await sb.mkdir(`${root}/d2/a/b`, { recursive: true });
    const exists = await assertRejects(() => sb.mkdir(`${root}/d1`));
    assert(exists instanceof AlreadyExistsError, String(exists));
    const noParent = await assertRejects(() => sb.mkdir(`${root}/x/y`));
    assert(noParent instanceof NotFoundError, String(noParent));
    await sb.mkdir(`${root}/d3`, { mode: 0o700 });
    assertEquals((await Deno.stat(`${root}/d3`)).mode! & 0o777, 0o700);
  });

  await t.step("readDir lists names and types", async () => {
    const dir = `${root}/list`;
    await Deno.mkdir(dir);
    await Deno.writeTextFile(`${dir}/f`, "x");
    await Deno.mkdir(`${dir}/sub`);
    await Deno.symlink("f", `${dir}/link`);
    const entries = [];
    for await (const e of sb.readDir(dir)) entries.push(e);
    entries.sort((a, b) => a.name.localeCompare(b.name));
    assertEquals(entries, [
      { name: "f", type: "file" },
      { name: "link", type: "symlink" },
      { name: "sub", type: "dir" },
    ]);
    // A big directory streams (more than one JSON payload's worth).
    const big = `${root}/big`;
    await Deno.mkdir(big);
    for (let i = 0; i < 3000; i++) {
      await Deno.writeTextFile(`${big}/file-with-a-long-name-${i}`, "");
    }
    let count = 0;
    for await (const _ of sb.readDir(big)) count++;
    assertEquals(count, 3000);
    const notDir = await assertRejects(async () => {
      for await (const _ of sb.readDir(`${dir}/f`)) { /* nothing */ }
    });
    assert(notDir instanceof NotADirectoryError, String(notDir));
    const missing = await assertRejects(async () => {
      for await (const _ of sb.readDir(`${root}/nope`)) { /* nothing */ }
    });
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("stat and lstat", async () => {
    await Deno.writeTextFile(`${root}/s.txt`, "12345");
    await Deno.symlink(`${root}/s.txt`, `${root}/s.link`);
    const info = await sb.stat(`${root}/s.txt`);
    assertEquals(info.type, "file");
    assertEquals(info.size, 5);
    const hostInfo = await Deno.stat(`${root}/s.txt`);
    assertEquals(info.mtime, hostInfo.mtime!.getTime());
    assertEquals(info.mode, hostInfo.mode! & 0o7777);
    assertEquals((await sb.stat(`${root}/s.link`)).type, "file");
    assertEquals((await sb.stat(`${root}/s.link`, { lstat: true })).type, "symlink");
    assertEquals((await sb.stat(root)).type, "dir");
    const missing = await assertRejects(() => sb.stat(`${root}/nope`));
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("remove", async () => {
    await Deno.writeTextFile(`${root}/r.txt`, "x");
    await sb.remove(`${root}/r.txt`);
    await assertRejects(() => Deno.stat(`${root}/r.txt`));
    await Deno.mkdir(`${root}/rd/inner`, { recursive: true });
    const notEmpty = await assertRejects(() => sb.remove(`${root}/rd`));
    assert(notEmpty instanceof NotEmptyError, String(notEmpty));
    await sb.remove(`${root}/rd`, { recursive: true });
    await assertRejects(() => Deno.stat(`${root}/rd`));
    const missing = await assertRejects(() => sb.remove(`${root}/rd`));
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("rename", async () => {
    await Deno.writeTextFile(`${root}/a.txt`, "A");
    await sb.rename(`${root}/a.txt`, `${root}/b.txt`);
    assertEquals(await Deno.readTextFile(`${root}/b.txt`), "A");
    await assertRejects(() => Deno.stat(`${root}/a.txt`));
    const missing = await assertRejects(() => sb.rename(`${root}/a.txt`, `${root}/c.txt`));
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("copy files and trees", async () => {
    await Deno.writeTextFile(`${root}/src.txt`, "copy me");
    await sb.copy(`${root}/src.txt`, `${root}/dst.txt`);
    assertEquals(await Deno.readTextFile(`${root}/dst.txt`), "copy me");
    await Deno.mkdir(`${root}/tree/a`, { recursive: true });
    await Deno.writeTextFile(`${root}/tree/a/f`, "deep");
    const isDir = await assertRejects(() => sb.copy(`${root}/tree`, `${root}/tree2`));
    assert(isDir instanceof IsADirectoryError, String(isDir));
    await sb.copy(`${root}/tree`, `${root}/tree2`, { recursive: true });
    assertEquals(await Deno.readTextFile(`${root}/tree2/a/f`), "deep");
    const missing = await assertRejects(() => sb.copy(`${root}/none`, `${root}/x`));
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("chmod", async () => {
    await Deno.writeTextFile(`${root}/m.sh`, "#!/bin/sh\necho ran\n");
    await sb.chmod(`${root}/m.sh`, 0o755);
    assertEquals((await sb.stat(`${root}/m.sh`)).mode, 0o755);
    assertEquals(text((await sb.exec([`${root}/m.sh`])).stdout), "ran\n");
    await sb.chmod(`${root}/m.sh`, 0o640);
    assertEquals((await Deno.stat(`${root}/m.sh`)).mode! & 0o7777, 0o640);
    const missing = await assertRejects(() => sb.chmod(`${root}/none`, 0o644));
    assert(missing instanceof NotFoundError, String(missing));
  });

  await t.step("watch reports create, modify, rename and delete, recursively", async () => {
    const dir = `${root}/watched`;
    await Deno.mkdir(`${dir}/sub`, { recursive: true });
    const ac = new AbortController();
    const events = await sb.watchReady(dir, { signal: ac.signal });
    const seen: WatchEvent[] = [];
    const collecting = (async () => {
      for await (const e of events) seen.push(e);
    })();
    const has = (kind: string, suffix: string) =>
      seen.some((e) => e.kind === kind && e.paths.some((p) => p.endsWith(suffix)));
    const waitFor = async (kind: string, suffix: string) => {
      const deadline = Date.now() + 60_000;
      while (!has(kind, suffix) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert(has(kind, suffix), `no ${kind} event for ${suffix}: ${JSON.stringify(seen)}`);
    };
    await Deno.writeTextFile(`${dir}/new.txt`, "1");
    await waitFor("create", "/new.txt");
    await Deno.writeTextFile(`${dir}/new.txt`, "22", { append: true });
    await waitFor("modify", "/new.txt");
    await Deno.rename(`${dir}/new.txt`, `${dir}/renamed.txt`);
    await waitFor("rename", "/renamed.txt");
    await Deno.remove(`${dir}/renamed.txt`);
    await waitFor("delete", "/renamed.txt");
    await Deno.writeTextFile(`${dir}/sub/deep.txt`, "x");
    await waitFor("create", "/sub/deep.txt");
    ac.abort();
    await collecting;
    const missing = await assertRejects(() => sb.watchReady(`${root}/not-there`));
    assert(missing instanceof NotFoundError, String(missing));
    await sb.ping();
  });
});

Deno.test("agent port forward", async (t) => {
  await using agent = await startAgent();
  await using sb = await agent.connect();

  // A TCP server started *through the agent*, bound to 127.0.0.1 on a free port.
  const server = sb.spawn([
    Deno.execPath(),
    "eval",
    `Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(port) },
      async (req) => new Response(req.method === "POST" ? await req.bytes() : "hello from the guest"));`,
  ]);
  const lines = new LineReader(server.stdout);
  const first = await lines.next();
  const guestPort = Number(first?.trim());
  assert(guestPort > 0, `server printed ${first}`);

  await t.step("HTTP through the forwarded port", async () => {
    await using fwd = await sb.forward(0, guestPort);
    assert(fwd.hostPort > 0);
    const res = await fetch(`http://127.0.0.1:${fwd.hostPort}/`);
    assertEquals(await res.text(), "hello from the guest");
    // A bigger body both ways, and several connections at once.
    const body = random(3 * 1024 * 1024);
    const results = await Promise.all([1, 2, 3].map(async () => {
      const r = await fetch(`http://127.0.0.1:${fwd.hostPort}/echo`, { method: "POST", body });
      return await sha256(await r.bytes());
    }));
    const want = await sha256(body);
    assertEquals(results, [want, want, want]);
  });

  await t.step("raw TCP with half-close is relayed both ways", async () => {
    // A TCP echo server in the guest: replies with what it got, then closes after our FIN.
    const echo = sb.spawn([
      Deno.execPath(),
      "eval",
      `const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
       console.log(l.addr.port);
       for await (const c of l) c.readable.pipeTo(c.writable).catch(() => {});`,
    ]);
    const echoLines = new LineReader(echo.stdout);
    const echoPort = Number((await echoLines.next())?.trim());
    await using fwd = await sb.forward(0, echoPort);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: fwd.hostPort });
    const payload = random(2 * 1024 * 1024);
    const reading = new Response(conn.readable).bytes();
    const w = conn.writable.getWriter();
    await w.write(payload);
    await conn.closeWrite();
    const reply = await reading;
    assertEquals(reply.length, payload.length);
    assertEquals(await sha256(reply), await sha256(payload));
    await echoLines.cancel();
    await echo.kill("SIGTERM");
    await echo.wait();
  });

  await t.step("a guest port with no listener closes the host connection", async () => {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const unused = probe.addr.port;
    probe.close();
    await using fwd = await sb.forward(0, unused);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: fwd.hostPort });
    const got = await new Response(conn.readable).bytes().catch(() => new Uint8Array(0));
    assertEquals(got.length, 0);
    await sb.ping();
  });

  await lines.cancel();
  await server.kill("SIGTERM");
  await server.wait();
});
