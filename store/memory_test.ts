import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { libc } from "../ffi/mod.ts";
import { Store } from "./store.ts";
import { StoreError } from "./errors.ts";
import type { MemorySource } from "./memory.ts";
import { pseudoRandom, tempDir, writeBase } from "./_test_utils.ts";

const BS = 65536;
const RAM = 64 * BS; // 4 MiB of "guest RAM"
const MACHINE = { cpus: 1, memoryMiB: 4, qemu: "7.2.22" };
const STATE = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 1, 2, 3]);

/** A sparse RAM file: blocks 1-8 and 40 hold data (block 5 is all zeros), the rest are holes. */
async function writeRam(path: string, seed: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(RAM);
  bytes.set(pseudoRandom(8 * BS, seed), BS);
  bytes.fill(0, 5 * BS, 6 * BS);
  bytes.set(pseudoRandom(BS, seed + 100), 40 * BS);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await f.truncate(RAM);
    for (const b of [1, 2, 3, 4, 5, 6, 7, 8, 40]) {
      await f.seek(b * BS, Deno.SeekMode.Start);
      await f.write(bytes.subarray(b * BS, (b + 1) * BS));
    }
  } finally {
    f.close();
  }
  return bytes;
}

async function setup(dir: string) {
  const store = await Store.open(`${dir}/store`, { log: () => {} });
  await writeBase(`${dir}/base.img`, 8, 3);
  const device = await store.openDevice({ base: `${dir}/base.img` }, { overlayDir: `${dir}/inst` });
  return { store, device };
}

async function saveWithMemory(
  device: Awaited<ReturnType<typeof setup>>["device"],
  name: string,
  source: MemorySource,
) {
  const snap = await device.snapshot();
  return await snap.save(name, { memory: { source, state: STATE, machine: MACHINE } });
}

Deno.test("memory checkpoint - the RAM image is stored as chunks and comes back byte for byte, holes kept", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  const ram = await writeRam(`${tmp.path}/ram`, 1);
  const r = await saveWithMemory(device, "m", { size: RAM, file: `${tmp.path}/ram` });
  await device.close();
  // 8 data blocks (block 5 is zero though allocated); holes are not read at all.
  assertEquals([r.memory!.usedBlocks, r.memory!.hashedBlocks, r.memory!.newChunks], [8, 8, 8]);
  assertEquals(r.memory!.stateBytes, STATE.length);

  const listed = (await store.list()).find((c) => c.name === "m")!;
  assertEquals(listed.memory, {
    size: RAM,
    usedBlocks: 8,
    stateBytes: STATE.length,
    machine: MACHINE,
  });
  const image = await store.readMemory("m");
  assertEquals(image.state, STATE);
  assertEquals(image.machine, MACHINE);
  const first = await store.materializeMemory(image);
  assert(first.written);
  assertEquals(await Deno.readFile(first.path), ram);
  assertEquals((await Deno.stat(first.path)).mode! & 0o777, 0o444);
  // Zero blocks stay holes: the file takes the space of the used memory only.
  const data = libc.dataRanges(first.path).reduce((n, [a, b]) => n + b - a, 0);
  assertEquals(data, 8 * BS);
  // The verified file is reused while nobody touched it.
  const again = await store.materializeMemory(image);
  assertEquals(again, { path: first.path, written: false });
  // The disk part is an ordinary checkpoint.
  const dev2 = await store.openDevice({ checkpoint: "m" }, { overlayDir: `${tmp.path}/i2` });
  await dev2.close();
});

Deno.test("memory checkpoint - a corrupted or truncated chunk is found before any guest maps the file", async () => {
  for (const damage of ["flip", "truncate", "remove"] as const) {
    await using tmp = await tempDir("shuru-mem-");
    const { store, device } = await setup(tmp.path);
    await writeRam(`${tmp.path}/ram`, 2);
    await saveWithMemory(device, "m", { size: RAM, file: `${tmp.path}/ram` });
    await device.close();
    const image = await store.readMemory("m");
    const hash = image.table.get(40)!;
    const chunk = store.chunks.pathOf(hash);
    const bytes = await Deno.readFile(chunk);
    await Deno.chmod(chunk, 0o644);
    if (damage === "flip") {
      bytes[1234]! ^= 0x10;
      await Deno.writeFile(chunk, bytes);
    } else if (damage === "truncate") {
      await Deno.writeFile(chunk, bytes.subarray(0, 1000));
    } else {
      await Deno.remove(chunk);
    }
    const err = await assertRejects(() => store.materializeMemory(image));
    assert(err instanceof StoreError && err.code === "corrupt_chunk", `${damage}: ${err}`);
    assert(err.message.includes("block 40") && err.message.includes('"m"'), err.message);
    // Nothing half-written is left to be mistaken for the image.
    assertEquals((await Array.fromAsync(Deno.readDir(store.memoryDir))).length, 0, damage);
    assertEquals((await Array.fromAsync(Deno.readDir(`${store.dir}/tmp`))).length, 0, damage);
  }
});

Deno.test("memory checkpoint - a cached RAM file that was changed or cut is written again", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  const ram = await writeRam(`${tmp.path}/ram`, 3);
  await saveWithMemory(device, "m", { size: RAM, file: `${tmp.path}/ram` });
  await device.close();
  const image = await store.readMemory("m");
  const { path } = await store.materializeMemory(image);
  await Deno.chmod(path, 0o644);
  await Deno.truncate(path, RAM - 4096);
  const fixed = await store.materializeMemory(image);
  assert(fixed.written, "a truncated cache was reused");
  assertEquals(await Deno.readFile(fixed.path), ram);
});

Deno.test("memory checkpoint - two images of a guest that changed a little share most chunks", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  const ram = await writeRam(`${tmp.path}/ram`, 4);
  await saveWithMemory(device, "one", { size: RAM, file: `${tmp.path}/ram` });
  // The guest wrote into block 2 and a page of block 50 afterwards.
  const f = await Deno.open(`${tmp.path}/ram`, { write: true });
  await f.seek(2 * BS + 100, Deno.SeekMode.Start);
  await f.write(new Uint8Array([1, 2, 3]));
  await f.seek(50 * BS, Deno.SeekMode.Start);
  await f.write(pseudoRandom(4096, 9));
  f.close();
  const r = await saveWithMemory(device, "two", { size: RAM, file: `${tmp.path}/ram` });
  await device.close();
  assertEquals([r.memory!.usedBlocks, r.memory!.newChunks], [9, 2]);
  const two = await store.readMemory("two");
  const back = await Deno.readFile((await store.materializeMemory(two)).path);
  ram[2 * BS + 100] = 1;
  ram[2 * BS + 101] = 2;
  ram[2 * BS + 102] = 3;
  ram.set(pseudoRandom(4096, 9), 50 * BS);
  assertEquals(back, ram);
});

Deno.test("memory checkpoint - from a known image plus a capture of changed blocks, only those are hashed", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  const ram = await writeRam(`${tmp.path}/ram`, 5);
  await saveWithMemory(device, "base", { size: RAM, file: `${tmp.path}/ram` });
  const base = await store.readMemory("base");
  const baseFile = (await store.materializeMemory(base)).path;
  // A restored guest changed blocks 3 and 60: the capture holds them at their offsets.
  const capture = `${tmp.path}/capture`;
  const changed = new Uint8Array(RAM);
  changed.set(pseudoRandom(BS, 31), 3 * BS);
  changed.set(pseudoRandom(BS, 32), 60 * BS);
  await Deno.writeFile(capture, changed);
  const blocks = new Uint8Array(RAM / BS);
  blocks[3] = 1;
  blocks[60] = 1;
  const r = await saveWithMemory(device, "next", {
    size: RAM,
    file: baseFile,
    fileTable: base.table,
    capture: { path: capture, blocks },
  });
  await device.close();
  assertEquals([r.memory!.hashedBlocks, r.memory!.newChunks, r.memory!.usedBlocks], [2, 2, 9]);
  ram.set(changed.subarray(3 * BS, 4 * BS), 3 * BS);
  ram.set(changed.subarray(60 * BS, 61 * BS), 60 * BS);
  const back = await Deno.readFile(
    (await store.materializeMemory(await store.readMemory("next"))).path,
  );
  assertEquals(back, ram);
});

Deno.test("memory checkpoint - an adopted RAM file becomes the cache; gc keeps memory chunks until the checkpoint goes", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  await writeRam(`${tmp.path}/ram`, 6);
  const r = await saveWithMemory(device, "m", {
    size: RAM,
    file: `${tmp.path}/ram`,
    adoptFile: true,
  });
  await device.close();
  const image = await store.readMemory("m");
  const cached = await store.materializeMemory(image);
  assertEquals(cached.written, false);
  assertEquals((await Deno.stat(cached.path)).ino, (await Deno.stat(`${tmp.path}/ram`)).ino);

  const kept = await store.gc();
  assertEquals(kept.removedChunks, 0);
  assertEquals(kept.removedMemoryFiles, 0);
  for (let b = 0; b < image.table.entryCount; b++) {
    const h = image.table.get(b);
    if (h) assert(await store.chunks.has(h), `memory chunk of block ${b} was collected`);
  }
  await store.delete("m");
  const freed = await store.gc({ pruneBaseCache: true });
  assertEquals(freed.removedMemoryFiles, 1);
  assert(freed.removedChunks >= r.memory!.usedBlocks, JSON.stringify(freed));
  assertEquals((await Array.fromAsync(Deno.readDir(store.memoryDir))).length, 0);
});

Deno.test("memory checkpoint - readMemory of a disk-only checkpoint says it has no memory", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  await device.save("disk-only");
  await device.close();
  const err = await assertRejects(() => store.readMemory("disk-only"));
  assert(err instanceof StoreError && err.code === "not_found", String(err));
  assert(err.message.includes("disk only"), err.message);
  assertEquals((await store.list())[0]!.memory, undefined);
});

Deno.test("memory checkpoint - a save that fails half-way lists nothing and leaves earlier checkpoints whole", async () => {
  await using tmp = await tempDir("shuru-mem-");
  const { store, device } = await setup(tmp.path);
  const ram = await writeRam(`${tmp.path}/ram`, 7);
  await saveWithMemory(device, "earlier", { size: RAM, file: `${tmp.path}/ram` });
  // The capture names blocks its file does not have: the save fails while storing the RAM,
  // after the disk chunks were written.
  const err = await assertRejects(() =>
    saveWithMemory(device, "broken", {
      size: RAM,
      file: `${tmp.path}/ram`,
      capture: { path: `${tmp.path}/no-such-capture`, blocks: new Uint8Array(RAM / BS).fill(1) },
    })
  );
  assert(err instanceof Error, String(err));
  await device.close();
  assertEquals((await store.list()).map((c) => c.name), ["earlier"]);
  assertEquals((await Array.fromAsync(Deno.readDir(`${store.dir}/tmp`))).length, 0);
  const back = await store.materializeMemory(await store.readMemory("earlier"));
  assertEquals(await Deno.readFile(back.path), ram);
});
