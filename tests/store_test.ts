/**
 * The checkpoint store end to end: `shuru nbd serve` saves and serves checkpoints to real NBD
 * clients, `shuru checkpoint` and `shuru store gc` manage them; corruption and SIGKILL mid-save.
 */

import { createBLAKE3 } from "hash-wasm";
import { assert, assertEquals } from "./assert.ts";
import {
  countChunks,
  pseudoRandom,
  requireTool,
  run,
  sameBytes,
  ServeProcess,
  shuru,
  testHome,
} from "./_serve_utils.ts";

const MiB = 1024 * 1024;
const BS = 65536;

/** Serves `source`, writes `writes` with nbdcopy-free qemu-io patterns or files, saves as `name`. */
async function saveWith(
  home: string,
  dir: string,
  source: string[],
  name: string,
  writes: { offset: number; data: Uint8Array }[],
): Promise<void> {
  const srv = await ServeProcess.start(home, `${dir}/save-${name}.sock`, [
    ...source,
    "--save",
    name,
  ]);
  try {
    for (const [i, w] of writes.entries()) {
      const file = `${dir}/w-${name}-${i}.bin`;
      await Deno.writeFile(file, w.data);
      const io = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        `write -s ${file} ${w.offset} ${w.data.length}`,
        srv.uri(),
      ]);
      assertEquals(io.code, 0, io.stderr + io.stdout);
    }
  } finally {
    const stopped = await srv.stop();
    assertEquals(stopped.code, 0, stopped.stderr);
  }
}

async function readCheckpoint(home: string, dir: string, name: string): Promise<Uint8Array> {
  const srv = await ServeProcess.start(home, `${dir}/read-${name}.sock`, [
    "--from",
    name,
    "--read-only",
  ]);
  try {
    const dest = `${dir}/read-${name}.img`;
    const out = await run("nbdcopy", [srv.uri(), dest]);
    assertEquals(out.code, 0, out.stderr);
    const bytes = await Deno.readFile(dest);
    await Deno.remove(dest);
    return bytes;
  } finally {
    assertEquals((await srv.stop()).code, 0);
  }
}

async function listJson(home: string) {
  const out = await shuru(home, ["checkpoint", "list", "--json"]);
  assertEquals(out.code, 0, out.stderr);
  return JSON.parse(out.stdout) as { name: string; error?: string; diskSize: number }[];
}

async function makeBase(path: string): Promise<Uint8Array> {
  const base = pseudoRandom(8 * MiB, 77);
  base.fill(0, MiB, 2 * MiB); // 16 zero blocks: 112 non-zero blocks
  await Deno.writeFile(path, base);
  return base;
}

Deno.test("store - two checkpoints from one base share chunks; gc after delete frees the rest", async () => {
  await requireTool("qemu-io");
  await requireTool("nbdcopy");
  await using t = await testHome();
  const base = await makeBase(`${t.path}/base.img`);
  const src = ["--base", `${t.path}/base.img`];
  const a = pseudoRandom(MiB, 1);
  const b = pseudoRandom(MiB, 2);
  await saveWith(t.home, t.path, src, "a", [{ offset: 3 * MiB, data: a }]);
  assertEquals(await countChunks(t.home), 112 + 16); // the base once, plus a's own 16 blocks
  await saveWith(t.home, t.path, src, "b", [{ offset: 5 * MiB, data: b }]);
  assertEquals(await countChunks(t.home), 112 + 16 + 16); // only b's own blocks were added
  const inspect = await shuru(t.home, ["checkpoint", "inspect", "b", "--json"]);
  assertEquals(inspect.code, 0, inspect.stderr);
  const details = JSON.parse(inspect.stdout);
  assertEquals([details.usedBlocks, details.uniqueBytes], [112, MiB]);
  const text = await shuru(t.home, ["checkpoint", "inspect", "b"]);
  assert(/unique bytes:\s+1\.0 MiB/.test(text.stdout), text.stdout);
  assert(/disk size:\s+8\.0 MiB/.test(text.stdout), text.stdout);
  const listed = await shuru(t.home, ["checkpoint", "list"]);
  assert(/^a\s+8\.0 MiB\s+7\.0 MiB/m.test(listed.stdout), listed.stdout);

  const del = await shuru(t.home, ["checkpoint", "delete", "b"]);
  assertEquals(del.code, 0, del.stderr);
  const gc = await shuru(t.home, ["store", "gc", "--json"]);
  assertEquals(gc.code, 0, gc.stderr);
  const report = JSON.parse(gc.stdout);
  assertEquals([report.removedChunks, report.freedBytes], [16, MiB]);
  assertEquals(await countChunks(t.home), 112 + 16);
  const expected = base.slice();
  expected.set(a, 3 * MiB);
  assert(sameBytes(await readCheckpoint(t.home, t.path, "a"), expected), "a changed after gc");
  const missing = await shuru(t.home, ["checkpoint", "delete", "b"]);
  assertEquals(missing.code, 1);
  assertEquals(
    missing.stderr.trim(),
    'shuru: Cannot delete checkpoint "b": no such checkpoint (existing: a)',
  );
});

Deno.test("store - a corrupt chunk fails that read with EIO, other reads work", async () => {
  await requireTool("qemu-io");
  await using t = await testHome();
  await makeBase(`${t.path}/base.img`);
  const block = pseudoRandom(BS, 5);
  await saveWith(t.home, t.path, ["--base", `${t.path}/base.img`], "c", [
    { offset: 4 * MiB, data: block },
  ]);
  const hasher = await createBLAKE3(256);
  const hex = hasher.init().update(block).digest("hex");
  const chunkPath = `${t.home}/store/chunks/${hex.slice(0, 2)}/${hex.slice(2)}`;
  const bytes = await Deno.readFile(chunkPath);
  bytes[1000]! ^= 0xff;
  await Deno.writeFile(chunkPath, bytes);
  const srv = await ServeProcess.start(t.home, `${t.path}/c.sock`, ["--from", "c"]);
  let stderr = "";
  try {
    const bad = await run("qemu-io", ["-f", "raw", "-c", `read ${4 * MiB + 4096} 4096`, srv.uri()]);
    assert(/Input\/output error/.test(bad.stdout + bad.stderr), bad.stdout + bad.stderr);
    const good = await run("qemu-io", ["-f", "raw", "-c", `read 0 ${4 * MiB}`, srv.uri()]);
    assertEquals(good.code, 0, good.stdout + good.stderr);
    assert(!/error/i.test(good.stdout), good.stdout);
  } finally {
    const stopped = await srv.stop();
    assertEquals(stopped.code, 0);
    stderr = stopped.stderr;
  }
  const lines = stderr.split("\n").filter((l) => l.includes(`corrupt chunk ${hex}`));
  assertEquals(lines.length, 1, stderr);
  assert(lines[0]!.includes('checkpoint "c"'), lines[0]);
});

Deno.test("store - SIGKILL at any moment of a save leaves the store consistent", async () => {
  await requireTool("qemu-io");
  await requireTool("nbdcopy");
  await using t = await testHome();
  const base = await makeBase(`${t.path}/base.img`);
  const first = pseudoRandom(2 * MiB, 10);
  await saveWith(t.home, t.path, ["--base", `${t.path}/base.img`, "--size", "40M"], "first", [
    { offset: 0, data: first },
  ]);
  const expectedFirst = new Uint8Array(40 * MiB);
  expectedFirst.set(base);
  expectedFirst.set(first, 0);

  // Kill points: before the save starts, after N new chunks landed, and at fixed delays.
  const points: ({ chunks: number } | { delayMs: number } | { manifest: true })[] = [
    { delayMs: 0 },
    { chunks: 1 },
    { chunks: 150 },
    { chunks: 400 },
    { delayMs: 250 },
    { delayMs: 600 },
    { manifest: true }, // just after the manifest is renamed into place
  ];
  let interrupted = 0;
  let listedAfterKill = 0;
  for (const [i, point] of points.entries()) {
    const name = `k${i}`;
    const payload = pseudoRandom(32 * MiB, 100 + i);
    await Deno.writeFile(`${t.path}/payload.bin`, payload);
    const srv = await ServeProcess.start(t.home, `${t.path}/k${i}.sock`, [
      "--from",
      "first",
      "--save",
      name,
    ]);
    const io = await run("qemu-io", [
      "-f",
      "raw",
      "-c",
      `write -s ${t.path}/payload.bin ${4 * MiB} ${32 * MiB}`,
      srv.uri(),
    ]);
    assertEquals(io.code, 0, io.stderr);
    const before = await countChunks(t.home);
    srv.kill("SIGTERM");
    if ("delayMs" in point) {
      await new Promise((r) => setTimeout(r, point.delayMs));
    } else if ("manifest" in point) {
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        try {
          await Deno.lstat(`${t.home}/store/checkpoints/${name}.idx`);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    } else {
      const deadline = Date.now() + 120_000;
      while ((await countChunks(t.home)) - before < point.chunks && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    const { code } = await srv.stop("SIGKILL");
    if (code !== 0) interrupted++;

    const list = await listJson(t.home);
    for (const c of list) assertEquals(c.error, undefined, `${c.name}: ${c.error}`);
    assert(list.some((c) => c.name === "first"), "an earlier checkpoint disappeared");
    if (list.some((c) => c.name === name)) {
      // A listed checkpoint is complete: every byte reads back.
      listedAfterKill++;
      const expected = expectedFirst.slice();
      expected.set(payload, 4 * MiB);
      assert(sameBytes(await readCheckpoint(t.home, t.path, name), expected), `${name} differs`);
      await shuru(t.home, ["checkpoint", "delete", name]);
    }
  }
  assert(interrupted >= 3, `only ${interrupted} saves were interrupted: the test proved little`);
  assert(listedAfterKill >= 1, "no save got as far as its manifest: the listed path went untested");
  assert(sameBytes(await readCheckpoint(t.home, t.path, "first"), expectedFirst));
  const gc = await shuru(t.home, ["store", "gc", "--json"]);
  assertEquals(gc.code, 0, gc.stderr);
  assertEquals([...Deno.readDirSync(`${t.home}/store/tmp`)].length, 0);
  assert(sameBytes(await readCheckpoint(t.home, t.path, "first"), expectedFirst));
});

Deno.test("store - writes go to the on-disk overlay, not the server's memory", async () => {
  await requireTool("qemu-img");
  await requireTool("qemu-io");
  await using t = await testHome();
  await Deno.writeFile(`${t.path}/base.img`, pseudoRandom(4 * MiB, 3));
  const srv = await ServeProcess.start(t.home, `${t.path}/rss.sock`, [
    "--base",
    `${t.path}/base.img`,
    "--size",
    "1G",
  ]);
  try {
    const status = async (field: string) => {
      const text = await Deno.readTextFile(`/proc/${srv.child.pid}/status`);
      return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)![1]) * 1024;
    };
    const idle = await status("VmRSS");
    // 768 MiB of non-zero data in 4 MiB writes, 8 in flight.
    const out = await run("qemu-img", [
      "bench",
      "-w",
      "-f",
      "raw",
      "-t",
      "none",
      "-s",
      "4M",
      "-c",
      "192",
      "-d",
      "8",
      "--pattern=90",
      srv.uri(),
    ]);
    assertEquals(out.code, 0, out.stderr);
    const peak = await status("VmHWM");
    assert(
      peak - idle < 256 * MiB,
      `peak RSS grew by ${((peak - idle) / MiB).toFixed(0)} MiB while writing 768 MiB`,
    );
    const check = await run("qemu-io", [
      "-f",
      "raw",
      "-c",
      `read -P 90 ${700 * MiB} 4M`,
      srv.uri(),
    ]);
    assertEquals(check.code, 0, check.stdout + check.stderr);
  } finally {
    assertEquals((await srv.stop()).code, 0);
  }
});
