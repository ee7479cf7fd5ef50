/**
 * `shuru nbd serve` against real NBD clients: nbdinfo, nbdcopy, qemu-io, qemu-img.
 */

import { assert, assertEquals } from "./_assert.ts";
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

async function makeBase(path: string, mib: number, seed: number): Promise<Uint8Array> {
  const data = pseudoRandom(mib * MiB, seed);
  // Leave some zero regions, as a real file system image has.
  data.fill(0, 2 * MiB, 3 * MiB);
  await Deno.writeFile(path, data);
  return data;
}

async function readAll(uri: string, dest: string): Promise<Uint8Array> {
  const out = await run("nbdcopy", [uri, dest]);
  assertEquals(out.code, 0, `nbdcopy failed: ${out.stderr}`);
  return await Deno.readFile(dest);
}

Deno.test("nbd serve - handshake, size and export name seen by nbdinfo", async () => {
  await requireTool("nbdinfo");
  await using t = await testHome();
  await makeBase(`${t.path}/base.img`, 4, 1);
  const srv = await ServeProcess.start(t.home, `${t.path}/s.sock`, [
    "--base",
    `${t.path}/base.img`,
    "--size",
    "12M",
    "--export",
    "disk0",
  ]);
  try {
    for (const name of ["", "disk0"]) {
      const info = await run("nbdinfo", ["--json", srv.uri(name)]);
      assertEquals(info.code, 0, info.stderr);
      const parsed = JSON.parse(info.stdout);
      const exp = parsed.exports[0];
      assertEquals(exp["export-size"], 12 * MiB);
      assertEquals(exp["can_multi_conn"], true);
      assertEquals(exp["is_read_only"], false);
    }
    const bad = await run("nbdinfo", ["--json", srv.uri("nope")]);
    assert(bad.code !== 0, "an unknown export name must be refused");
  } finally {
    const { code } = await srv.stop();
    assertEquals(code, 0);
  }
});

Deno.test("nbd serve - byte-exact reads of a base, zeros past it, writes read back", async () => {
  await requireTool("nbdcopy");
  await requireTool("qemu-io");
  await requireTool("qemu-img");
  await using t = await testHome();
  const base = await makeBase(`${t.path}/base.img`, 8, 2);
  const srv = await ServeProcess.start(t.home, `${t.path}/s.sock`, [
    "--base",
    `${t.path}/base.img`,
    "--size",
    String(24 * MiB),
  ]);
  try {
    const all = await readAll(srv.uri(), `${t.path}/out.img`);
    assertEquals(all.length, 24 * MiB);
    assert(sameBytes(all.subarray(0, base.length), base), "base bytes differ");
    assert(all.subarray(base.length).every((b) => b === 0), "bytes past the base are not zero");
    // qemu-img compares an independent reader's view against the base file.
    const cmp = await run("qemu-img", [
      "compare",
      "-f",
      "raw",
      "-F",
      "raw",
      `${t.path}/base.img`,
      srv.uri(),
    ]);
    assertEquals(cmp.code, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    // Unaligned writes across block boundaries, then pattern reads (qemu-io fails on mismatch).
    const io = await run("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0xab 65000 200000",
      "-c",
      "write -P 0xcd 20M 1M",
      "-c",
      "write -z 4M 100000",
      "-c",
      "read -P 0xab 65000 200000",
      "-c",
      "read -P 0xcd 20M 1M",
      "-c",
      "read -P 0 4M 100000",
      "-c",
      "read -P 0 23M 1M",
      srv.uri(),
    ]);
    assertEquals(io.code, 0, io.stderr);
    assert(!/Pattern verification failed|failed/i.test(io.stdout + io.stderr), io.stdout);
    // Bytes around the writes are untouched.
    const after = await readAll(srv.uri(), `${t.path}/out2.img`);
    assert(sameBytes(after.subarray(0, 65000), base.subarray(0, 65000)));
    assert(sameBytes(after.subarray(265000, 4 * MiB), base.subarray(265000, 4 * MiB)));
    assert(sameBytes(after.subarray(4 * MiB + 100000, 8 * MiB), base.subarray(4 * MiB + 100000)));
    // The base file itself never changes.
    assert(sameBytes(await Deno.readFile(`${t.path}/base.img`), base));
  } finally {
    assertEquals((await srv.stop()).code, 0);
  }
});

Deno.test("nbd serve - --save, then --from serves the same bytes", async () => {
  await requireTool("nbdcopy");
  await using t = await testHome();
  await makeBase(`${t.path}/base.img`, 8, 3);
  const srv = await ServeProcess.start(t.home, `${t.path}/s.sock`, [
    "--base",
    `${t.path}/base.img`,
    "--size",
    "16M",
    "--save",
    "saved",
  ]);
  const payload = pseudoRandom(16 * MiB, 9);
  payload.fill(0, 5 * MiB, 7 * MiB);
  await Deno.writeFile(`${t.path}/payload.img`, payload);
  const cp = await run("nbdcopy", ["--flush", `${t.path}/payload.img`, srv.uri()]);
  assertEquals(cp.code, 0, cp.stderr);
  const stopped = await srv.stop("SIGINT");
  assertEquals(stopped.code, 0, stopped.stderr);
  assert(stopped.stderr.includes("saved checkpoint saved"), stopped.stderr);
  const list = await shuru(t.home, ["checkpoint", "list", "--json"]);
  assertEquals(list.code, 0, list.stderr);
  const [entry] = JSON.parse(list.stdout);
  assertEquals([entry.name, entry.diskSize], ["saved", 16 * MiB]);
  const back = await ServeProcess.start(t.home, `${t.path}/s2.sock`, ["--from", "saved"]);
  try {
    const all = await readAll(back.uri(), `${t.path}/out.img`);
    assert(sameBytes(all, payload), "checkpoint bytes differ from what was written");
  } finally {
    assertEquals((await back.stop()).code, 0);
  }
  // Saving again under the same name is refused before serving.
  const again = await shuru(t.home, [
    "nbd",
    "serve",
    "--socket",
    `${t.path}/s3.sock`,
    "--from",
    "saved",
    "--save",
    "saved",
  ]);
  assertEquals(again.code, 2);
  assert(again.stderr.includes('Cannot save checkpoint "saved": it already exists'));
  assert(await countChunks(t.home) > 0);
});

Deno.test("nbd serve - --read-only refuses writes and still serves reads", async () => {
  await requireTool("qemu-io");
  await using t = await testHome();
  await makeBase(`${t.path}/base.img`, 2, 4);
  const srv = await ServeProcess.start(t.home, `${t.path}/s.sock`, [
    "--base",
    `${t.path}/base.img`,
    "--read-only",
  ]);
  try {
    const w = await run("qemu-io", ["-f", "raw", "-c", "write -P 1 0 4096", srv.uri()]);
    assert(w.code !== 0 || /failed|read-only|not permitted/i.test(w.stdout + w.stderr), w.stdout);
    const r = await run("qemu-io", ["-r", "-f", "raw", "-c", "read 0 1M", srv.uri()]);
    assertEquals(r.code, 0, r.stderr);
  } finally {
    assertEquals((await srv.stop()).code, 0);
  }
});

Deno.test("nbd serve - unknown checkpoint is a one-line error listing what exists", async () => {
  await using t = await testHome();
  const out = await shuru(t.home, [
    "nbd",
    "serve",
    "--socket",
    `${t.path}/s.sock`,
    "--from",
    "missing",
  ]);
  assertEquals(out.code, 1);
  assertEquals(
    out.stderr.trim(),
    'shuru: Cannot open checkpoint "missing": no such checkpoint (existing: none)',
  );
});
