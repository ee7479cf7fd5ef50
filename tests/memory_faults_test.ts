/**
 * Memory checkpoints that must fail, and fail in one line, before any guest runs; and a save
 * killed half-way: a damaged chunk of a RAM image or a cut manifest makes `run --from` fail with
 * one clear line; SIGKILL of the sandbox's supervisor while it
 * stores a memory checkpoint leaves the earlier checkpoints whole and usable and nothing of the
 * new one listed. A sandbox with a host folder mounted refuses a memory save in one line.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { type CliResult, TestHome } from "./_shuru.ts";
import { waitFor } from "./_registry.ts";
import { testDeadline } from "./_deadline.ts";
import { decodeManifest, initHasher, toHex } from "../store/mod.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Asserts `r` failed with exit `code` and one line on stderr matching `pattern`. */
function oneLine(r: CliResult, code: number, pattern: RegExp): void {
  assertEquals(r.code, code, `${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assert(pattern.test(lines[0]!), r.stderr);
  assert(!r.stderr.includes("    at "), `a stack trace: ${r.stderr}`);
}

function manifestOf(home: TestHome, name: string): string {
  return join(home.dir, "store", "checkpoints", `${name}.idx`);
}

function chunkPath(home: TestHome, hash: Uint8Array): string {
  const hex = toHex(hash);
  return join(home.dir, "store", "chunks", hex.slice(0, 2), hex.slice(2));
}

/** Every chunk hash (hex) a checkpoint's disk and memory tables name. */
async function hashesOf(home: TestHome, name: string): Promise<Set<string>> {
  await initHasher();
  const m = decodeManifest(await Deno.readFile(manifestOf(home, name)));
  const out = new Set<string>();
  for (const table of [m.table, m.memory?.table]) {
    if (!table) continue;
    for (let b = 0; b < table.entryCount; b++) {
      const h = table.get(b);
      if (h) out.add(toHex(h));
    }
  }
  return out;
}

async function chunkCount(home: TestHome): Promise<number> {
  let n = 0;
  for await (const d of Deno.readDir(join(home.dir, "store", "chunks"))) {
    for await (const _ of Deno.readDir(join(home.dir, "store", "chunks", d.name))) n++;
  }
  return n;
}

testDeadline(1500, "memory checkpoints - damaged images and a killed save");
Deno.test("memory checkpoints - damaged images and a killed save", async (t) => {
  await using home = await TestHome.create();
  let supervisor: number | undefined;
  try {
    await t.step(
      "two memory checkpoints of one sandbox, 8 MiB of random memory apart",
      async () => {
        ok(await home.run(["start", "--name", "src"]), "start");
        supervisor = JSON.parse(ok(await home.run(["ps", "--json"]), "ps").stdout)[0].supervisor
          .pid;
        ok(await home.run(["exec", "src", "--", "sh", "-c", "echo first > /dev/shm/mark"]), "w");
        ok(await home.run(["checkpoint", "save", "good", "--memory", "--sandbox", "src"]), "good");
        // Random bytes in guest memory: chunks only the second image has.
        ok(
          await home.run([
            "exec",
            "src",
            "--",
            "sh",
            "-c",
            "head -c 8M /dev/urandom > /dev/shm/noise && echo second > /dev/shm/mark",
          ]),
          "noise",
        );
        ok(await home.run(["checkpoint", "save", "bad", "--memory", "--sandbox", "src"]), "bad");
      },
    );

    await t.step("a damaged chunk of the RAM image: run --from fails in one line", async () => {
      const good = await hashesOf(home, "good");
      const bad = decodeManifest(await Deno.readFile(manifestOf(home, "bad")));
      const mem = bad.memory!.table;
      let victim: Uint8Array | undefined;
      let block = -1;
      for (let b = mem.entryCount - 1; b >= 0 && !victim; b--) {
        const h = mem.get(b);
        if (!h || good.has(toHex(h))) continue;
        // Only in this image (and in it once), so nothing else is damaged with it.
        let uses = 0;
        for (let c = 0; c < mem.entryCount; c++) {
          const o = mem.get(c);
          if (o && toHex(o) === toHex(h)) uses++;
        }
        for (let c = 0; c < bad.table.entryCount; c++) {
          const o = bad.table.get(c);
          if (o && toHex(o) === toHex(h)) uses++;
        }
        if (uses === 1) [victim, block] = [h, b];
      }
      assert(victim, "a chunk only the second image has");
      const path = chunkPath(home, victim);
      const bytes = await Deno.readFile(path);
      bytes[1000] = bytes[1000]! ^ 0xff;
      await Deno.chmod(path, 0o600);
      await Deno.writeFile(path, bytes);
      const r = await home.run(["run", "--from", "bad", "--", "true"]);
      oneLine(r, 125, new RegExp(`block ${block} of its RAM image is damaged`));
      // Nothing is cached from the failed attempt; the first checkpoint is untouched.
      const mem2 = await Array.fromAsync(Deno.readDir(join(home.dir, "store", "memory")));
      assertEquals(mem2.filter((e) => e.name.endsWith(".ram")), [], "no RAM file left");
    });

    await t.step("a cut manifest: run --from fails in one line", async () => {
      const idx = await Deno.readFile(manifestOf(home, "bad"));
      await Deno.writeFile(manifestOf(home, "bad"), idx.subarray(0, idx.length - 100));
      const r = await home.run(["run", "--from", "bad", "--", "true"]);
      oneLine(
        r,
        125,
        /^shuru: Cannot start from checkpoint bad: cannot read the manifest: .*truncated/,
      );
      // A damaged checkpoint can still be deleted (and then gc runs again).
      ok(await home.run(["checkpoint", "delete", "bad"]), "delete");
    });

    await t.step(
      "SIGKILL while a memory save is stored: nothing half-listed, the rest whole",
      async () => {
        ok(
          await home.run([
            "exec",
            "src",
            "--",
            "sh",
            "-c",
            "head -c 64M /dev/urandom > /dev/shm/noise2",
          ]),
          "more noise",
        );
        const before = await chunkCount(home);
        const save = home.spawn(["checkpoint", "save", "killed", "--memory", "--sandbox", "src"]);
        const output = save.output();
        // The guest runs again and the new chunks are being written: kill the supervisor.
        await waitFor("chunks of the save", 300_000, async () => (await chunkCount(home)) > before);
        Deno.kill(supervisor!, "SIGKILL");
        const r = await output;
        assert(r.code !== 0, `the save did not fail: ${new TextDecoder().decode(r.stdout)}`);
        const list = JSON.parse(
          ok(await home.run(["checkpoint", "list", "--json"]), "list").stdout,
        );
        const names = list.map((c: { name: string; error?: string }) => c.name).sort();
        assertEquals(names, ["good"], JSON.stringify(list));
        assert(list.find((c: { name: string }) => c.name === "good").memory, "good has memory");
        // A gc removes what the killed save left (temporary files, unreferenced chunks).
        const gc = JSON.parse(ok(await home.run(["store", "gc", "--json"]), "gc").stdout);
        assert(gc.removedChunks > 0 || gc.removedTempFiles > 0, JSON.stringify(gc));
        // The first checkpoint resumes as it was saved.
        const run = ok(
          await home.run(["run", "--from", "good", "--", "cat", "/dev/shm/mark"]),
          "r",
        );
        assertEquals(run.stdout, "first\n");
      },
    );

    await t.step("a sandbox with a mounted folder refuses a memory save in one line", async () => {
      const dir = join(home.dir, "share");
      await Deno.mkdir(dir);
      ok(await home.run(["start", "--name", "mounted", "--mount", `${dir}:/share`]), "start");
      const r = await home.run(["checkpoint", "save", "m", "--memory", "--sandbox", "mounted"]);
      oneLine(r, 2, /host folder\(s\) mounted/);
      ok(await home.run(["stop", "mounted"]), "stop");
    });
  } finally {
    for (const row of JSON.parse((await home.run(["ps", "--json"])).stdout || "[]")) {
      await home.run(["stop", row.name]).catch(() => {});
    }
    if (supervisor) {
      try {
        Deno.kill(supervisor, "SIGKILL");
      } catch { /* gone */ }
    }
  }
});
