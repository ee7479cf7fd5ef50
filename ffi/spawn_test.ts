import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { LibcError } from "./libc.ts";
import { spawnPiped } from "./spawn.ts";

const decoder = new TextDecoder();

async function text(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  for await (const c of stream) out += decoder.decode(c, { stream: true });
  return out;
}

Deno.test("spawnPiped - own session, env, cwd, pipes and exit code", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "shuru-spawn-" }));
  try {
    const c = spawnPiped({
      path: "/bin/sh",
      argv: ["sh", "-c", 'echo "$X"; pwd; ps -o pgid=,sid= -p $$; cat; echo err >&2; exit 9'],
      env: { X: "from env", PATH: "/usr/bin:/bin" },
      cwd: dir,
    });
    await c.stdin!.write(new TextEncoder().encode("piped in\n"));
    await c.stdin!.close();
    const [out, err, status] = await Promise.all([
      text(c.stdout.readable),
      text(c.stderr.readable),
      c.status,
    ]);
    const lines = out.split("\n");
    assertEquals(lines[0], "from env");
    assertEquals(lines[1], dir);
    assertEquals(lines[2]!.trim().split(/\s+/).map(Number), [c.pid, c.pid]);
    assertEquals(lines[3], "piped in");
    assertEquals(err, "err\n");
    assertEquals(status, { exited: true, code: 9 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("spawnPiped - signals are reset to defaults: SIGPIPE kills a writer to a closed pipe", async () => {
  // Deno ignores SIGPIPE; a child that inherited that would loop on EPIPE instead of dying.
  const c = spawnPiped({
    path: "/bin/sh",
    argv: ["sh", "-c", "exec yes"],
    env: { PATH: "/usr/bin:/bin" },
    stdin: "null",
  });
  const reader = c.stdout.readable.getReader();
  await reader.read();
  await reader.cancel();
  await c.stderr.close();
  assertEquals(await c.status, { exited: false, signal: 13 });
});

Deno.test("spawnPiped - a missing executable is a LibcError, nothing leaks", () => {
  const e = assertThrows(() => spawnPiped({ path: "/nonexistent/prog", argv: ["prog"], env: {} }));
  assert(e instanceof LibcError, String(e));
  assertEquals((e as LibcError).code, "ENOENT");
});

Deno.test("spawnPiped - many children at once, each exit collected", async () => {
  const children = Array.from(
    { length: 40 },
    (_, i) =>
      spawnPiped({
        path: "/bin/sh",
        argv: ["sh", "-c", `echo ${i}; exit ${i % 7}`],
        env: {},
        stdin: "null",
      }),
  );
  const results = await Promise.all(
    children.map(async (
      c,
    ) => [await text(c.stdout.readable), await text(c.stderr.readable), await c.status]),
  );
  results.forEach(([out, err, status], i) => {
    assertEquals(out, `${i}\n`);
    assertEquals(err, "");
    assertEquals(status, { exited: true, code: i % 7 });
  });
});
