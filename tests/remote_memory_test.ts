/**
 * A memory checkpoint through a real registry on 127.0.0.1: a running sandbox (a file on tmpfs,
 * a background process started without a shell) saved with `checkpoint save --memory`, pushed
 * with its RAM chunks (a second push sends no chunk again), then used from other data homes:
 *
 * - `run --from REF` resumes it (RAM chunks fetched and verified first, the disk lazily): the
 *   file and the process are there;
 * - `start --from REF` resumes it too (`boot` is `checkpoint`);
 * - `checkpoint pull REF` brings back the memory (`checkpoint inspect` shows it) and `run --from
 *   NAME` resumes the pulled checkpoint with no registry at all;
 * - the artifact's config says format version 2 and the memory size (`skopeo inspect`).
 *
 * Four guest boots, each warm (a ready snapshot or a memory resume).
 */

import { assert, assertEquals } from "./_assert.ts";
import { testDeadline } from "./_deadline.ts";
import { requireRegistryTools, skopeo, TestRegistry } from "./_registry.ts";
import { type CliResult, TestHome } from "./_shuru.ts";
import { Sandbox } from "../mod.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** What the resumed guest shows: the tmpfs file and the count of the background process. */
const PROBE = 'cat /dev/shm/t; echo "procs=$(pgrep -fc "[s]leep 31337")"';
const EXPECTED = "kept-in-ram\nprocs=1\n";

const NAME =
  "a memory checkpoint through a registry: push sends its RAM, run/start --from REF and pull resume it";
testDeadline(1800, NAME);
Deno.test(NAME, async (t) => {
  await requireRegistryTools();
  await using reg = await TestRegistry.start();
  await using h1 = await TestHome.create();
  const ref = reg.ref("env/mem:1");
  let inspected: { distinctChunks: number; memory: { usedBlocks: number; size: number } };

  await t.step("a running sandbox with state in RAM, saved with --memory", async () => {
    ok(await h1.run(["start", "--name", "src"]), "start");
    try {
      await using sb = await Sandbox.connect("src", { home: h1.dir });
      const w = await sb.exec("echo kept-in-ram > /dev/shm/t && findmnt -no FSTYPE /dev/shm");
      assertEquals(w.stdout, "tmpfs\n", w.stderr);
      await sb.spawn(["sleep", "31337"]);
      ok(
        await h1.run(["checkpoint", "save", "live", "--memory", "--sandbox", "src"]),
        "save --memory",
      );
    } finally {
      await h1.run(["stop", "src"]).catch(() => {});
    }
    inspected = JSON.parse(
      ok(await h1.run(["checkpoint", "inspect", "live", "--json"]), "inspect").stdout,
    );
    assert(inspected.memory?.usedBlocks > 100, JSON.stringify(inspected));
  });

  await t.step("push sends the RAM chunks; a second push sends none again", async () => {
    const first = JSON.parse(
      ok(await h1.run(["checkpoint", "push", "live", ref, "--json"]), "push").stdout,
    );
    // Every distinct chunk of the disk and of the RAM.
    assertEquals(first.chunks, inspected.distinctChunks, JSON.stringify(first));
    assertEquals(first.newChunks + first.reusedChunks, first.chunks);
    const again = JSON.parse(
      ok(
        await h1.run(["checkpoint", "push", "live", reg.ref("env/mem:2"), "--json"]),
        "push again",
      ).stdout,
    );
    assertEquals([again.newChunks, again.reusedChunks], [0, first.chunks], JSON.stringify(again));
    const config = await skopeo([
      "inspect",
      "--config",
      "--raw",
      "--tls-verify=false",
      `docker://${ref}`,
    ]);
    assertEquals(config.code, 0, config.stderr);
    const c = JSON.parse(config.stdout);
    assertEquals([c.formatVersion, c.memorySize], [2, inspected.memory.size], config.stdout);
  });

  await using h2 = await TestHome.create();
  await t.step("run --from REF in another home resumes the memory", async () => {
    const r = ok(await h2.run(["run", "-v", "--from", ref, "--", "sh", "-c", PROBE]), "run");
    assert(r.stderr.includes("shuru: resumed a memory checkpoint"), r.stderr);
    assertEquals(r.stdout, EXPECTED, r.stderr);
    const fetched = /lazy start from \S+: fetched (\d+) chunks \((\d+) bytes\)/.exec(r.stderr);
    assert(fetched, r.stderr);
    console.log(
      `run --from REF fetched ${fetched[1]} of ${inspected.distinctChunks} chunks ` +
        `(${fetched[2]} bytes on the wire)`,
    );
  });

  await t.step("start --from REF resumes it as a sandbox", async () => {
    ok(await h2.run(["start", "--from", ref, "--name", "copy"]), "start");
    try {
      const ps = JSON.parse(ok(await h2.run(["ps", "--json"]), "ps").stdout);
      assertEquals(ps.find((r: { name: string }) => r.name === "copy")?.boot, "checkpoint");
      const r = ok(await h2.run(["exec", "copy", "--", "sh", "-c", PROBE]), "exec");
      assertEquals(r.stdout, EXPECTED, r.stderr);
    } finally {
      await h2.run(["stop", "copy"]).catch(() => {});
    }
  });

  await using h3 = await TestHome.create();
  await t.step("pull brings the memory back; run --from NAME resumes it", async () => {
    ok(await h3.run(["checkpoint", "pull", ref, "got"]), "pull");
    const got = JSON.parse(
      ok(await h3.run(["checkpoint", "inspect", "got", "--json"]), "inspect").stdout,
    );
    assertEquals(got.memory?.usedBlocks, inspected.memory.usedBlocks, JSON.stringify(got));
    assertEquals(got.distinctChunks, inspected.distinctChunks);
    const human = ok(await h3.run(["checkpoint", "inspect", "got"]), "inspect").stdout;
    assert(/memory: +2\.0 GiB, \d+ blocks stored/.test(human), human);
    // No registry from here on: everything was pulled.
    await reg.stop();
    const r = ok(await h3.run(["run", "-v", "--from", "got", "--", "sh", "-c", PROBE]), "run");
    assert(r.stderr.includes("shuru: resumed a memory checkpoint"), r.stderr);
    assertEquals(r.stdout, EXPECTED, r.stderr);
  });
});
