import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { Store, validateName } from "./store.ts";
import { StoreError } from "./errors.ts";
import { pseudoRandom, tempDir, writeBase } from "./_test_utils.ts";

const BS = 65536;

async function chunkCount(store: Store): Promise<number> {
  return (await Array.fromAsync(store.chunks.list())).length;
}

Deno.test("validateName - accepts safe names, rejects paths and odd characters", () => {
  for (const ok of ["a", "base-1", "v1.2_x", "A".repeat(128)]) validateName(ok);
  for (const bad of ["", ".hidden", "../x", "a/b", "a b", "a..b", "-x", "A".repeat(129), "é"]) {
    let caught: unknown;
    try {
      validateName(bad);
    } catch (err) {
      caught = err;
    }
    assert(caught instanceof StoreError && caught.code === "invalid_name", bad);
  }
});

Deno.test("Store - two checkpoints from one base share the base's chunks", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 32, 5); // 24 non-zero blocks
  for (const [name, seed] of [["a", 1], ["b", 2]] as const) {
    const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
      overlayDir: `${tmp.path}/inst-${name}`,
    });
    await dev.write(3 * BS, pseudoRandom(2 * BS, seed));
    const r = await dev.save(name);
    // First save ingests the base once; the second one finds its hashes in the cache.
    assertEquals(r.hashedBlocks, name === "a" ? 24 + 2 : 2);
    await dev.close();
  }
  assertEquals(await chunkCount(store), 24 + 2 + 2);
  const a = await store.inspect("a");
  // Blocks 3 and 4 written (block 4 was zero in the base).
  assertEquals([a.usedBlocks, a.uniqueChunks, a.uniqueBytes], [25, 2, 2 * BS]);
});

Deno.test("Store - a checkpoint records the device's architecture; its children inherit it", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 4, 3);
  let dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i1`,
    arch: "arm64",
  });
  await dev.save("arm");
  await dev.close();
  dev = await store.openDevice({ base: `${tmp.path}/base.img` }, { overlayDir: `${tmp.path}/i2` });
  await dev.save("unknown");
  await dev.close();
  dev = await store.openDevice({ checkpoint: "arm" }, { overlayDir: `${tmp.path}/i3` });
  await dev.save("child");
  await dev.close();
  assertEquals((await store.inspect("arm")).arch, "arm64");
  assertEquals((await store.inspect("child")).arch, "arm64");
  assertEquals((await store.inspect("unknown")).arch, undefined);
  assertEquals((await store.list()).map((c) => c.arch), ["arm64", "arm64", undefined]);
});

Deno.test("Store - base cache follows content: replacing the base file re-ingests it", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  const basePath = `${tmp.path}/base.img`;
  const first = await writeBase(basePath, 8, 7);
  let dev = await store.openDevice({ base: basePath }, { overlayDir: `${tmp.path}/i1` });
  await dev.save("old");
  await dev.close();
  // Replace the base with different bytes (new inode, same size).
  await Deno.remove(basePath);
  const second = await writeBase(basePath, 8, 8);
  dev = await store.openDevice({ base: basePath }, { overlayDir: `${tmp.path}/i2` });
  const r = await dev.save("new");
  assertEquals(r.hashedBlocks, 6);
  await dev.close();
  for (const [name, bytes] of [["old", first], ["new", second]] as const) {
    const d = await store.openDevice({ checkpoint: name }, { overlayDir: `${tmp.path}/r-${name}` });
    assertEquals(await d.read(0, d.size), bytes);
    await d.close();
  }
});

Deno.test("Store - a new hard link to the base (as an asset build makes) neither fails a save nor re-ingests", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  const basePath = `${tmp.path}/base.img`;
  await writeBase(basePath, 8, 7); // 6 non-zero blocks
  assertEquals(await store.prepareBase(basePath), 6);
  const dev = await store.openDevice({ base: basePath }, { overlayDir: `${tmp.path}/i` });
  try {
    // Linking changes the file's ctime, not its bytes: the base is the same base. (Deno reports
    // ctime in whole seconds: wait for the next one so the change is visible.)
    await new Promise((r) => setTimeout(r, 1100));
    await Deno.link(basePath, `${tmp.path}/another-version.img`);
    await dev.write(2 * BS, pseudoRandom(BS, 3));
    const r = await dev.save("x");
    assertEquals([r.hashedBlocks, r.newChunks], [1, 1]);
  } finally {
    await dev.close();
  }
  assertEquals(await store.prepareBase(basePath), 0);
});

Deno.test("Store - a save refuses an existing name unless asked to overwrite", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 4, 1);
  const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  try {
    await dev.save("x");
    const err = await assertRejects(() => dev.save("x"), "already exists");
    assert(err instanceof StoreError && err.code === "exists");
    await dev.write(0, new Uint8Array([1]));
    await dev.save("x", { overwrite: true });
    assertEquals((await store.list()).length, 1);
  } finally {
    await dev.close();
  }
});

Deno.test("Store - gc after delete frees only unreferenced chunks", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 8, 3); // 6 non-zero blocks
  const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  await dev.write(BS, pseudoRandom(BS, 11));
  await dev.save("keep");
  await dev.write(2 * BS, pseudoRandom(2 * BS, 12));
  await dev.save("drop");
  await dev.close();
  assertEquals(await chunkCount(store), 6 + 1 + 2);
  // A leftover temp file from a crashed save goes too.
  await Deno.writeFile(`${tmp.path}/store/tmp/stray.chunk`, new Uint8Array(10));
  await store.delete("drop");
  const report = await store.gc();
  assertEquals([report.removedChunks, report.freedBytes, report.removedTempFiles], [2, 2 * BS, 1]);
  assertEquals(report.keptChunks, 7);
  const d = await store.openDevice({ checkpoint: "keep" }, { overlayDir: `${tmp.path}/r` });
  assertEquals(await d.read(BS, BS), pseudoRandom(BS, 11));
  await d.close();
  // Dropping the base cache frees the base blocks "keep" does not use (block 1 was rewritten).
  const pruned = await store.gc({ pruneBaseCache: true });
  assertEquals([pruned.removedChunks, pruned.removedBaseCaches], [1, 1]);
  await assertRejects(() => store.delete("drop"), "no such checkpoint (existing: keep)");
});

Deno.test("Store - an open device keeps its checkpoint's chunks through delete and gc", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 8, 4);
  let dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  await dev.write(0, pseudoRandom(BS, 21));
  await dev.save("c");
  await dev.close();
  dev = await store.openDevice({ checkpoint: "c" }, { overlayDir: `${tmp.path}/j` });
  try {
    const before = await dev.read(0, dev.size);
    await store.delete("c");
    await store.gc({ pruneBaseCache: true });
    assertEquals(await dev.read(0, dev.size), before);
    // A save after the parent is gone still works: the table holds every hash itself.
    await dev.write(BS, new Uint8Array([9]));
    await dev.save("child");
  } finally {
    await dev.close();
  }
  const report = await store.gc();
  assertEquals(report.removedLeases, 0);
  const child = await store.openDevice({ checkpoint: "child" }, { overlayDir: `${tmp.path}/k` });
  assertEquals(await child.read(0, BS), pseudoRandom(BS, 21));
  await child.close();
});

Deno.test("Store - openDevice from an unknown checkpoint lists what exists", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  const err = await assertRejects(
    () => store.openDevice({ checkpoint: "nope" }, { overlayDir: `${tmp.path}/i` }),
    'Cannot open checkpoint "nope": no such checkpoint (existing: none)',
  );
  assert(err instanceof StoreError && err.code === "not_found");
  await assertRejects(
    () => store.openDevice({ base: `${tmp.path}/missing.img` }, { overlayDir: `${tmp.path}/i` }),
    "Cannot open base image",
  );
});

Deno.test("Store - a save with no changes from a checkpoint adds no chunks", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 8, 6);
  let dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  await dev.save("a");
  await dev.close();
  const before = await chunkCount(store);
  dev = await store.openDevice({ checkpoint: "a" }, { overlayDir: `${tmp.path}/j` });
  const r = await dev.save("b");
  await dev.close();
  assertEquals([r.hashedBlocks, r.newChunks, await chunkCount(store)], [0, 0, before]);
});

Deno.test("Store - prepareBase ingests once so the first save hashes only dirty blocks", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 16, 9); // 12 non-zero blocks
  assertEquals(await store.prepareBase(`${tmp.path}/base.img`), 12);
  assertEquals(await store.prepareBase(`${tmp.path}/base.img`), 0);
  const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  await dev.write(5 * BS, pseudoRandom(BS, 1));
  const r = await dev.save("x");
  await dev.close();
  assertEquals([r.hashedBlocks, r.newChunks, r.usedBlocks], [1, 1, 12]);
});

/** Every path under `dir` (itself included) with its permission bits. */
async function modesUnder(dir: string): Promise<{ path: string; dir: boolean; mode: number }[]> {
  const out = [{ path: dir, dir: true, mode: (await Deno.stat(dir)).mode! & 0o7777 }];
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await modesUnder(path));
    else out.push({ path, dir: false, mode: (await Deno.lstat(path)).mode! & 0o7777 });
  }
  return out;
}

Deno.test("Store - folders are 0700, chunks, manifests and the lock 0600: no other user opens them", async () => {
  await using tmp = await tempDir("shuru-store-");
  // A parent other users may enter: only the store's own modes keep them out.
  await Deno.chmod(tmp.path, 0o755);
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 8, 3);
  const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/inst`,
  });
  await dev.write(0, pseudoRandom(BS, 9));
  await dev.save("private");
  await dev.close();
  await store.gc(); // takes the lock file
  const all = await modesUnder(`${tmp.path}/store`);
  const files = all.filter((e) => !e.dir);
  assert(files.some((e) => e.path.endsWith("/lock")), "the lock file exists");
  assert(files.some((e) => e.path.endsWith("/checkpoints/private.idx")), "the manifest exists");
  assert(files.some((e) => /\/chunks\/[0-9a-f]{2}\//.test(e.path)), "chunks exist");
  const open = all.filter((e) => e.mode !== (e.dir ? 0o700 : 0o600));
  assertEquals(open, [], "every folder 0700 and every file 0600");
  // The real question: can another user open the lock (or anything) at all?
  const asNobody = await new Deno.Command("setpriv", {
    args: ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", `${tmp.path}/store/lock`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(!asNobody.success, "another user opened the store lock");
  assert(new TextDecoder().decode(asNobody.stderr).includes("Permission denied"));
});

Deno.test("Store - gc keeps a live process's lease and drops one whose pid was reused", async () => {
  await using tmp = await tempDir("shuru-store-");
  const store = await Store.open(`${tmp.path}/store`);
  await writeBase(`${tmp.path}/base.img`, 4, 5);
  const dev = await store.openDevice({ base: `${tmp.path}/base.img` }, {
    overlayDir: `${tmp.path}/i`,
  });
  await dev.write(BS, pseudoRandom(BS, 21));
  await dev.save("c");
  await dev.close();
  const device = await store.openDevice({ checkpoint: "c" }, { overlayDir: `${tmp.path}/j` });
  try {
    const leases = `${tmp.path}/store/leases`;
    const [mine] = await Array.fromAsync(Deno.readDir(leases));
    const [pid, start] = mine!.name.split(".");
    assertEquals(Number(pid), Deno.pid);
    // The same pid with another start time: an earlier process whose pid this one reuses.
    const stale = `${pid}.${Number(start) + 1}.${crypto.randomUUID()}.idx`;
    await Deno.link(`${leases}/${mine!.name}`, `${leases}/${stale}`);
    const report = await store.gc();
    assertEquals(report.removedLeases, 1);
    const left = (await Array.fromAsync(Deno.readDir(leases))).map((e) => e.name);
    assertEquals(left, [mine!.name]);
  } finally {
    await device.close();
  }
});
