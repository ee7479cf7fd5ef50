import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { AgentError } from "../proto/errors.ts";
import {
  chmod,
  copy,
  mkdir,
  readDir,
  readFile,
  remove,
  rename,
  stat,
  watch,
  writeFile,
} from "./files.ts";
import type { WatchEvent } from "../proto/messages.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "shuru-files-" }));
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  }
  return out;
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const c of stream) {
    parts.push(c);
    n += c.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function chunked(data: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= data.length) return c.close();
      c.enqueue(data.slice(off, off + size));
      off += size;
    },
  });
}

async function assertCode(p: Promise<unknown>, code: string, includes: string): Promise<void> {
  const e = await assertRejects(() => p, includes);
  assert(e instanceof AgentError, `expected AgentError, got ${e}`);
  assertEquals(e.code, code, e.message);
}

Deno.test("writeFile/readFile - round trips of 0 B, 1 B and 5 MiB with hashes compared", async () => {
  await withDir(async (dir) => {
    for (const size of [0, 1, 5 * 1024 * 1024 + 3]) {
      const data = randomBytes(size);
      const path = `${dir}/f${size}`;
      assertEquals(await writeFile(path, chunked(data, 100_000)), size);
      const r = await readFile(path);
      const back = await collect(r.readable);
      assertEquals(r.bytesRead(), size);
      assertEquals(await sha256(back), await sha256(data));
      assertEquals((await stat(path)).size, size);
    }
  });
});

Deno.test("readFile - offset and length; errors before any byte", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/t`, "0123456789");
    const r = await readFile(`${dir}/t`, { offset: 3, length: 4 });
    assertEquals(new TextDecoder().decode(await collect(r.readable)), "3456");
    await assertCode(
      readFile(`${dir}/missing`),
      "not_found",
      `Cannot read ${dir}/missing: no such file`,
    );
    await assertCode(readFile(dir), "is_a_directory", "is a directory");
  });
});

Deno.test("writeFile - mode, append, createNew, missing parent", async () => {
  await withDir(async (dir) => {
    const p = `${dir}/w`;
    await writeFile(p, chunked(new TextEncoder().encode("ab"), 1), { mode: 0o600 });
    await writeFile(p, chunked(new TextEncoder().encode("cd"), 1), { append: true });
    assertEquals(await Deno.readTextFile(p), "abcd");
    await writeFile(p, chunked(new TextEncoder().encode("XY"), 1), { offset: 1 });
    assertEquals(await Deno.readTextFile(p), "aXYd", "offset writes in place, no truncation");
    await writeFile(`${dir}/sparse`, chunked(new TextEncoder().encode("z"), 1), { offset: 4 });
    assertEquals(await Deno.readFile(`${dir}/sparse`), new Uint8Array([0, 0, 0, 0, 0x7a]));
    assertEquals((await stat(p)).mode, 0o600);
    await assertCode(
      writeFile(p, chunked(new Uint8Array(1), 1), { createNew: true }),
      "already_exists",
      "Cannot write",
    );
    await assertCode(
      writeFile(`${dir}/no/x`, chunked(new Uint8Array(1), 1)),
      "not_found",
      "Cannot write",
    );
    await assertCode(
      writeFile(dir, chunked(new Uint8Array(1), 1)),
      "is_a_directory",
      "Cannot write",
    );
  });
});

Deno.test("mkdir/readDir/stat/remove - happy paths and error cases", async () => {
  await withDir(async (dir) => {
    await mkdir(`${dir}/a/b/c`, { recursive: true });
    await assertCode(mkdir(`${dir}/a`), "already_exists", "Cannot create directory");
    await assertCode(mkdir(`${dir}/x/y`), "not_found", "Cannot create directory");
    await mkdir(`${dir}/a/m`, { mode: 0o700 });
    assertEquals((await stat(`${dir}/a/m`)).mode, 0o700);
    await Deno.writeTextFile(`${dir}/a/f`, "hi");
    await Deno.symlink("f", `${dir}/a/l`);
    const entries = [];
    for await (const e of readDir(`${dir}/a`)) entries.push(e);
    entries.sort((x, y) => x.name.localeCompare(y.name));
    assertEquals(entries, [
      { name: "b", type: "dir" },
      { name: "f", type: "file" },
      { name: "l", type: "symlink" },
      { name: "m", type: "dir" },
    ]);
    const collectDir = async (p: string) => {
      for await (const _ of readDir(p)) { /* drain */ }
    };
    await assertCode(collectDir(`${dir}/none`), "not_found", "Cannot list");
    await assertCode(collectDir(`${dir}/a/f`), "not_a_directory", "Cannot list");
    const s = await stat(`${dir}/a/l`);
    assertEquals([s.type, s.size], ["file", 2]);
    assertEquals((await stat(`${dir}/a/l`, { lstat: true })).type, "symlink");
    assert(typeof s.mtime === "number" && s.mtime > 0);
    await assertCode(stat(`${dir}/zz`), "not_found", "Cannot stat");
    await assertCode(remove(`${dir}/a`), "not_empty", "Cannot remove");
    await remove(`${dir}/a/f`);
    await remove(`${dir}/a`, { recursive: true });
    await assertCode(remove(`${dir}/a`), "not_found", "Cannot remove");
  });
});

Deno.test("rename/copy/chmod - happy paths and error cases", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/f`, "data");
    await rename(`${dir}/f`, `${dir}/g`);
    assertEquals(await Deno.readTextFile(`${dir}/g`), "data");
    await assertCode(rename(`${dir}/f`, `${dir}/h`), "not_found", "Cannot rename");
    await copy(`${dir}/g`, `${dir}/h`);
    assertEquals(await Deno.readTextFile(`${dir}/h`), "data");
    await chmod(`${dir}/h`, 0o751);
    assertEquals((await stat(`${dir}/h`)).mode, 0o751);
    await assertCode(chmod(`${dir}/none`, 0o600), "not_found", "Cannot chmod");
    await mkdir(`${dir}/t/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/t/sub/x`, "deep");
    await Deno.symlink("sub/x", `${dir}/t/link`);
    await assertCode(copy(`${dir}/t`, `${dir}/t2`), "is_a_directory", "use recursive");
    await copy(`${dir}/t`, `${dir}/t2`, { recursive: true });
    assertEquals(await Deno.readTextFile(`${dir}/t2/sub/x`), "deep");
    assertEquals(await Deno.readLink(`${dir}/t2/link`), "sub/x");
    await assertCode(
      copy(`${dir}/t`, `${dir}/t2`, { recursive: true }),
      "already_exists",
      "Cannot copy",
    );
    await assertCode(copy(`${dir}/none`, `${dir}/x`), "not_found", "Cannot copy");
  });
});

Deno.test("watch - recursive create, modify, rename and delete events", async () => {
  await withDir(async (dir) => {
    await mkdir(`${dir}/sub`);
    const ac = new AbortController();
    const events: WatchEvent[] = [];
    const w = watch(dir, { signal: ac.signal });
    const done = (async () => {
      for await (const e of w.events) events.push(e);
    })();
    const has = (kind: string, ...paths: string[]) =>
      events.some((e) => e.kind === kind && paths.every((p, i) => e.paths[i] === p));
    // Each change waits for its event, however long delivery takes (until the deadline).
    const seen = async (kind: string, ...paths: string[]) => {
      const deadline = Date.now() + 60_000;
      while (!has(kind, ...paths) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    // No waiting before the first change: the watch is active once watch() returns.
    await Deno.writeTextFile(`${dir}/sub/a`, "1");
    await seen("create", `${dir}/sub/a`);
    await Deno.writeTextFile(`${dir}/sub/a`, "2", { append: true });
    await seen("modify", `${dir}/sub/a`);
    await Deno.rename(`${dir}/sub/a`, `${dir}/sub/b`);
    await seen("rename", `${dir}/sub/a`, `${dir}/sub/b`);
    await Deno.remove(`${dir}/sub/b`);
    await seen("delete", `${dir}/sub/b`);
    ac.abort();
    await done;
    assert(has("create", `${dir}/sub/a`), JSON.stringify(events));
    assert(has("modify", `${dir}/sub/a`), JSON.stringify(events));
    assert(has("rename", `${dir}/sub/a`, `${dir}/sub/b`), JSON.stringify(events));
    assert(has("delete", `${dir}/sub/b`), JSON.stringify(events));
    const e = assertThrows(() => watch(`${dir}/none`), "Cannot watch");
    assertEquals((e as AgentError).code, "not_found");
  });
});
