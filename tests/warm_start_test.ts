/**
 * Warm starts end to end through the CLI: the ready snapshot made once by concurrent first
 * starts, resumed by later ones, rebuilt with one notice when damaged; every run setting applied
 * after the resume (mounts, env, cwd, ports, network up or down); each resumed guest unique
 * (RNG, clock, machine-id) before it is reported ready.
 *
 * Tests that make ready snapshots use an assets folder of their own (`privateAssets`, linking
 * the shared assets), so they never race the rest of the suite's snapshot.
 *
 * @module
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { type CliResult, TestHome } from "./_shuru.ts";
import { describe, fields } from "./_netns.ts";

function count(text: string, needle: string): number {
  return text.split("\n").filter((l) => l.includes(needle)).length;
}

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what}: ${describe(r)}`);
  return r;
}

async function readyDirs(home: TestHome): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(home.assets, "ready"))) {
    if (e.isDirectory) out.push(e.name);
  }
  return out;
}

Deno.test("warm start - concurrent first starts make the ready snapshot once; later runs resume it; --cold boots; another CPU count has its own", async () => {
  await using home = await TestHome.create({ privateAssets: true });
  const [a, b] = await Promise.all([
    home.run(["run", "-v", "--", "echo", "one"]),
    home.run(["run", "-v", "--", "echo", "two"]),
  ]);
  ok(a, "first");
  ok(b, "second");
  assertEquals([a.stdout, b.stdout], ["one\n", "two\n"]);
  const made = count(a.stderr + b.stderr, "making the ready snapshot");
  assertEquals(made, 1, `${describe(a)}\n${describe(b)}`);
  assert(a.stderr.includes("shuru: warm start"), describe(a));
  assert(b.stderr.includes("shuru: warm start"), describe(b));
  assertEquals((await readyDirs(home)).length, 1);

  const again = ok(await home.run(["run", "-v", "--", "echo", "three"]), "third");
  assertEquals(again.stdout, "three\n");
  assertEquals(count(again.stderr, "making the ready snapshot"), 0, describe(again));
  assert(/boot phases \(ms each\): assets \d+, ready \d+, device/.test(again.stderr), again.stderr);

  const cold = ok(await home.run(["run", "-v", "--cold", "--", "echo", "cold"]), "cold");
  assertEquals(cold.stdout, "cold\n");
  assert(cold.stderr.includes("shuru: cold boot (--cold)"), describe(cold));
  assert(cold.stderr.includes("guest phases"), describe(cold));
  // Another machine (fewer CPUs) has a ready snapshot of its own, made once; the first stays.
  const one = ok(await home.run(["run", "-v", "--cpus", "1", "--", "nproc"]), "--cpus 1");
  assertEquals(one.stdout, "1\n");
  assertEquals(count(one.stderr, "making the ready snapshot for 1 CPUs"), 1, describe(one));
  const again1 = ok(await home.run(["run", "--cpus", "1", "--", "nproc"]), "--cpus 1 again");
  assertEquals(count(again1.stderr, "ready snapshot"), 0, describe(again1));
  assertEquals((await readyDirs(home)).length, 2);
});

Deno.test("warm start - a damaged ready snapshot is made again with one notice", async () => {
  await using home = await TestHome.create({ privateAssets: true });
  ok(await home.run(["run", "--", "true"]), "make it");
  const [key] = await readyDirs(home);
  const dir = join(home.assets, "ready", key!);

  // Bytes changed in place in the RAM file (same size).
  using ram = await Deno.open(join(dir, "ram"), { write: true });
  await ram.seek(64 * 1024 * 1024, Deno.SeekMode.Start);
  await ram.write(new Uint8Array(4096).fill(0xa5));
  ram.close();
  const r1 = ok(await home.run(["run", "--", "echo", "after ram"]), "after a damaged RAM file");
  assertEquals(r1.stdout, "after ram\n");
  assertEquals(count(r1.stderr, "the ready snapshot is unusable"), 1, describe(r1));
  assert(r1.stderr.includes("RAM file was changed"), describe(r1));

  // A state file cut short.
  const [key2] = await readyDirs(home);
  const state = join(home.assets, "ready", key2!, "state");
  const bytes = await Deno.readFile(state);
  await Deno.writeFile(state, bytes.subarray(0, bytes.length >> 1));
  const r2 = ok(await home.run(["run", "--", "echo", "after state"]), "after a cut state");
  assertEquals(r2.stdout, "after state\n");
  assertEquals(count(r2.stderr, "the ready snapshot is unusable"), 1, describe(r2));

  // The disk blocks altered: caught by their hash when the disk is prepared.
  const [key3] = await readyDirs(home);
  const data = join(home.assets, "ready", key3!, "disk.data");
  const disk = await Deno.readFile(data);
  disk[100] = disk[100]! ^ 0xff;
  await Deno.writeFile(data, disk);
  const r3 = ok(await home.run(["run", "--", "echo", "after disk"]), "after damaged disk blocks");
  assertEquals(r3.stdout, "after disk\n");
  assertEquals(count(r3.stderr, "the ready snapshot is unusable"), 1, describe(r3));

  const r4 = ok(await home.run(["run", "--", "echo", "fine"]), "after the rebuilds");
  assertEquals(count(r4.stderr, "ready snapshot"), 0, describe(r4));
  assertEquals((await readyDirs(home)).length, 1);
});

Deno.test("warm start - mounts (read-only, read-write), env and cwd apply after the resume; a fifth mount boots cold", async () => {
  await using home = await TestHome.create();
  const ro = join(home.dir, "ro");
  const rw = join(home.dir, "rw");
  await Deno.mkdir(ro);
  await Deno.mkdir(rw);
  await Deno.writeTextFile(join(ro, "in.txt"), "from the host\n");
  const script = [
    "cat /data/in.txt",
    "echo guest-wrote > /out/made.txt",
    'echo "foo=$FOO"',
    'echo "cwd=$(pwd)"',
    'echo "ro_write=$(echo x 2>/dev/null > /data/x && echo ok)"',
  ].join("; ");
  const r = ok(
    await home.run([
      "run",
      "-v",
      "--allow-host-writes",
      "--mount",
      `${ro}:/data:ro`,
      "--mount",
      `${rw}:/out:rw`,
      "-e",
      "FOO=bar",
      "--cwd",
      "/tmp",
      "--",
      "sh",
      "-c",
      script,
    ]),
    "mounts",
  );
  assert(r.stderr.includes("shuru: warm start"), describe(r));
  const f = fields(r.stdout);
  assert(r.stdout.startsWith("from the host\n"), describe(r));
  assertEquals(f.foo, "bar");
  assertEquals(f.cwd, "/tmp");
  // A read-only mount: the guest's writes land in a throwaway layer.
  assertEquals(f.ro_write, "ok");
  assertEquals(await Deno.readTextFile(join(rw, "made.txt")), "guest-wrote\n");
  assertEquals(await Array.fromAsync(Deno.readDir(ro)).then((e) => e.map((x) => x.name)), [
    "in.txt",
  ]);

  const many = ["a", "b", "c", "d", "e"];
  const args: string[] = [];
  for (const m of many) {
    await Deno.mkdir(join(home.dir, m));
    await Deno.writeTextFile(join(home.dir, m, "f"), m);
    args.push("--mount", `${join(home.dir, m)}:/m/${m}`);
  }
  const five = ok(
    await home.run(["run", ...args, "--", "sh", "-c", "cat /m/a/f /m/e/f"]),
    "five mounts",
  );
  assertEquals(five.stdout, "ae");
  assertEquals(
    count(five.stderr, "shuru: booting cold: 5 mounts, a warm start has 4 mount slots"),
    1,
    describe(five),
  );
});

Deno.test("warm start - two resumed guests are unique: RNG bytes, machine-id; clocks current", async () => {
  await using home = await TestHome.create();
  const script = [
    'echo "urandom=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n")"',
    "echo \"getrandom=$(python3 -c 'import os; print(os.getrandom(32).hex())')\"",
    'echo "machine_id=$(cat /etc/machine-id)"',
    'echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"',
    'echo "date=$(date +%s)"',
    'echo "host=$(hostname)"',
  ].join("; ");
  const before = Date.now() / 1000;
  const [a, b] = await Promise.all([
    home.run(["run", "-v", "--", "sh", "-c", script]),
    home.run(["run", "-v", "--", "sh", "-c", script]),
  ]);
  const after = Date.now() / 1000;
  ok(a, "first");
  ok(b, "second");
  assert(a.stderr.includes("shuru: warm start") && b.stderr.includes("shuru: warm start"));
  const fa = fields(a.stdout);
  const fb = fields(b.stdout);
  for (const key of ["urandom", "getrandom", "machine_id"]) {
    assert(fa[key] && fa[key]!.length >= 32, `${key}: ${describe(a)}`);
    assert(fa[key] !== fb[key], `${key} is the same in both: ${fa[key]}`);
  }
  assert(fa.boot_id !== fb.boot_id, `boot_id is the same: ${fa.boot_id}`);
  for (const f of [fa, fb]) {
    const t = Number(f.date);
    assert(t >= Math.floor(before) - 2 && t <= Math.ceil(after) + 2, `date ${t} vs ${before}`);
    assertEquals(f.host, "shuru");
  }
});
