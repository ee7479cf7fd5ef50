import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { ChunkStore } from "./chunk_store.ts";
import { blake3, initHasher, toHex } from "./hash.ts";
import { StoreError } from "./errors.ts";

await initHasher();

Deno.test("ChunkStore - put, has, read, list, remove", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-chunks-" });
  try {
    const cs = new ChunkStore(dir);
    await cs.init();
    const data = new Uint8Array(4096).fill(7);
    const h = blake3(data);
    assertEquals(await cs.has(h), false);
    assertEquals(await cs.put(h, data), true);
    assertEquals(await cs.put(h, data), false);
    await cs.syncDirs();
    assert(await cs.has(h));
    assert(cs.pathOf(h).endsWith(`chunks/${toHex(h).slice(0, 2)}/${toHex(h).slice(2)}`));
    assertEquals(await cs.read(h, 4096), data);
    const listed = await Array.fromAsync(cs.list());
    assertEquals(listed, [[toHex(h), 4096]]);
    assertEquals([...Deno.readDirSync(cs.tmpDir)].length, 0);
    await cs.removeHex(toHex(h));
    assertEquals(await cs.has(h), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ChunkStore - read detects flipped byte, short file, missing file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-chunks-" });
  try {
    const cs = new ChunkStore(dir);
    await cs.init();
    const data = new Uint8Array(4096).fill(3);
    const h = blake3(data);
    await cs.put(h, data);
    const bad = data.slice();
    bad[100] = 4;
    await Deno.writeFile(cs.pathOf(h), bad);
    const e1 = await assertRejects(() => cs.read(h, 4096), "content hashes to");
    assert(e1 instanceof StoreError && e1.code === "corrupt_chunk");
    await Deno.writeFile(cs.pathOf(h), data.subarray(0, 100));
    await assertRejects(() => cs.read(h, 4096), "100 bytes");
    await Deno.remove(cs.pathOf(h));
    await assertRejects(() => cs.read(h, 4096), "missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
