import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { Store } from "./store.ts";
import { pseudoRandom, tempDir, writeBase } from "./_test_utils.ts";

const BS = 65536;

async function setup() {
  const tmp = await tempDir("shuru-device-");
  const logs: string[] = [];
  const store = await Store.open(`${tmp.path}/store`, { log: (l) => logs.push(l) });
  const basePath = `${tmp.path}/base.img`;
  const base = await writeBase(basePath, 16, 1);
  return { tmp, store, basePath, base, logs, overlay: (n: string) => `${tmp.path}/inst-${n}` };
}

Deno.test("CowDevice - reads a base byte-exact and past its end as zeros", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, {
    overlayDir: s.overlay("a"),
    size: 20 * BS + 123,
  });
  try {
    assertEquals(dev.size, 20 * BS + 123);
    assertEquals(await dev.read(0, s.base.length), s.base);
    assertEquals(await dev.read(1000, 5 * BS), s.base.subarray(1000, 1000 + 5 * BS));
    const tail = await dev.read(16 * BS - 10, 4 * BS + 133);
    assertEquals(tail.subarray(0, 10), s.base.subarray(16 * BS - 10));
    assert(tail.subarray(10).every((b) => b === 0));
    // Opening wrote nothing to the store.
    assertEquals((await Array.fromAsync(s.store.chunks.list())).length, 0);
    await assertRejects(() => dev.read(dev.size - 1, 2), "outside");
  } finally {
    await dev.close();
  }
});

Deno.test("CowDevice - writes, partial blocks, zeroes and trim read back correctly", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  const model = s.base.slice();
  const apply = async (off: number, data: Uint8Array) => {
    await dev.write(off, data);
    model.set(data, off);
  };
  try {
    await apply(100, pseudoRandom(10, 2)); // inside one block
    await apply(BS - 5, pseudoRandom(3 * BS + 17, 3)); // spans 5 blocks, partial both ends
    await apply(8 * BS, pseudoRandom(2 * BS, 4)); // whole blocks
    await apply(10 * BS, new Uint8Array(BS)); // a whole zero block
    await dev.writeZeroes(12 * BS + 7, BS);
    model.fill(0, 12 * BS + 7, 13 * BS + 7);
    await dev.trim(14 * BS, BS + 10); // only block 14 is whole
    model.fill(0, 14 * BS, 15 * BS);
    assertEquals(await dev.read(0, dev.size), model);
    assert(dev.dirtyBlocks() > 0);
    const status = await dev.blockStatus!(0, dev.size);
    assertEquals(status.reduce((n, e) => n + e.length, 0), dev.size);
    assert(status.some((e) => e.zero) && status.some((e) => !e.zero));
    // The overlay lives in a file in the instance folder, not in memory.
    const files = [...Deno.readDirSync(s.overlay("a"))];
    assertEquals(files.length, 1);
  } finally {
    await dev.close();
  }
  assertEquals([...Deno.readDirSync(s.overlay("a"))].length, 0);
});

Deno.test("CowDevice - concurrent partial writes to one block lose nothing", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  try {
    const writes = [];
    for (let i = 0; i < 64; i++) {
      writes.push(dev.write(BS + i * 512, new Uint8Array(512).fill(i + 1)));
    }
    await Promise.all(writes);
    const got = await dev.read(BS, BS / 2);
    for (let i = 0; i < 64; i++) {
      assert(got.subarray(i * 512, (i + 1) * 512).every((b) => b === i + 1));
    }
  } finally {
    await dev.close();
  }
});

Deno.test("CowDevice - save, reopen from the checkpoint, second save adds nothing", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  const extra = pseudoRandom(3 * BS, 9);
  let expected: Uint8Array;
  try {
    await dev.write(2 * BS, extra);
    expected = await dev.read(0, dev.size);
    const r1 = await dev.save("one");
    assertEquals(r1.usedBlocks, 13); // 12 non-zero base blocks, and zero block 4 written
    // 12 base blocks ingested (the cache) + 3 written blocks hashed.
    assertEquals(r1.hashedBlocks, 12 + 3);
    const r2 = await dev.save("two");
    assertEquals([r2.hashedBlocks, r2.newChunks], [0, 0]);
    await dev.write(5 * BS, pseudoRandom(100, 10));
    const r3 = await dev.save("three");
    assertEquals([r3.hashedBlocks, r3.newChunks], [1, 1]);
    await assertRejects(() => dev.save("one"), "already exists");
    await assertRejects(() => dev.save("../x"), "Cannot use checkpoint name");
  } finally {
    await dev.close();
  }
  const again = await s.store.openDevice({ checkpoint: "one" }, { overlayDir: s.overlay("b") });
  try {
    assertEquals(await again.read(0, again.size), expected);
    const r = await again.save("one-copy");
    assertEquals([r.hashedBlocks, r.newChunks], [0, 0]);
  } finally {
    await again.close();
  }
  assertEquals((await s.store.list()).map((c) => c.name), ["one", "one-copy", "three", "two"]);
});

Deno.test("CowDevice - snapshot saves the frozen state while writes continue", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  try {
    await dev.write(0, new Uint8Array(BS).fill(1));
    const frozen = await dev.read(0, dev.size);
    const snap = await dev.snapshot();
    const saving = snap.save("frozen");
    await dev.write(0, new Uint8Array(BS).fill(2));
    await dev.write(BS + 3, new Uint8Array(10).fill(3));
    await saving;
    assertEquals((await dev.read(0, 1))[0], 2);
    const back = await s.store.openDevice({ checkpoint: "frozen" }, { overlayDir: s.overlay("b") });
    try {
      assertEquals(await back.read(0, back.size), frozen);
    } finally {
      await back.close();
    }
    // The next save only hashes what changed after the snapshot.
    const r = await dev.save("later");
    assertEquals(r.hashedBlocks, 2);
  } finally {
    await dev.close();
  }
});

Deno.test("CowDevice - a corrupt chunk fails its reads only and logs one line", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  await dev.write(0, new Uint8Array(BS).fill(5));
  await dev.save("c");
  await dev.close();
  const back = await s.store.openDevice({ checkpoint: "c" }, { overlayDir: s.overlay("b") });
  try {
    const { table } = back.lower as unknown as { table: import("./manifest.ts").BlockTable };
    const path = s.store.chunks.pathOf(table.get(0)!);
    const bytes = await Deno.readFile(path);
    bytes[17]! ^= 1;
    await Deno.writeFile(path, bytes);
    await assertRejects(() => back.read(0, 512), "Cannot read chunk");
    await assertRejects(() => back.read(100, 512), "Cannot read chunk");
    assertEquals(s.logs.length, 1);
    assert(s.logs[0]!.includes('checkpoint "c"') && s.logs[0]!.includes("corrupt chunk"));
    assertEquals(await back.read(BS, BS), s.base.subarray(BS, 2 * BS));
  } finally {
    await back.close();
  }
});

Deno.test("CowDevice - a device larger than its checkpoint reads zeros past it", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  await dev.save("small");
  await dev.close();
  const big = await s.store.openDevice({ checkpoint: "small" }, {
    overlayDir: s.overlay("b"),
    size: 64 * BS,
  });
  try {
    assertEquals(await big.read(0, s.base.length), s.base);
    assert((await big.read(s.base.length, 48 * BS)).every((b) => b === 0));
    await big.write(60 * BS, new Uint8Array([1, 2, 3]));
    const r = await big.save("big");
    assertEquals(r.hashedBlocks, 1);
  } finally {
    await big.close();
  }
  const info = await s.store.inspect("big");
  assertEquals(info.diskSize, 64 * BS);
  assertEquals(info.uniqueChunks, 1);
});

Deno.test("CowDevice - saves drop overlay generations no block points at", async () => {
  const s = await setup();
  await using _ = s.tmp;
  const dev = await s.store.openDevice({ base: s.basePath }, { overlayDir: s.overlay("a") });
  try {
    await dev.write(0, pseudoRandom(2 * BS, 1));
    await dev.save("g1");
    await dev.write(0, pseudoRandom(BS, 2)); // block 1 still lives in generation 0
    await dev.save("g2");
    assertEquals(dev.liveLayers(), 2);
    await dev.write(BS, pseudoRandom(BS, 3)); // now nothing points at generation 0
    await dev.save("g3");
    assertEquals(dev.liveLayers(), 2);
    assertEquals([...Deno.readDirSync(s.overlay("a"))].length, 2);
    const expected = s.base.slice();
    expected.set(pseudoRandom(BS, 2), 0);
    expected.set(pseudoRandom(BS, 3), BS);
    assertEquals(await dev.read(0, dev.size), expected);
  } finally {
    await dev.close();
  }
});
