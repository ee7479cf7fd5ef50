/**
 * Memory checkpoints end to end through the CLI and the SDK, on real guests (TCG): a running
 * sandbox saved with `checkpoint save --memory` keeps running; `run --from` and `start --from`
 * resume it with its processes as they were (a shell variable of a terminal session, a Python
 * process holding a sum, a file on tmpfs, a listening server reached through `-p`); forks with
 * `start --count` and `Sandbox.fork` each go on on their own and are unique; `checkpoint
 * list/inspect` show the memory; `store gc` keeps its chunks while the checkpoint exists and
 * frees them after.
 *
 * One source sandbox and one checkpoint serve every step: a resume is cheap, the first save and
 * a boot are not.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { type CliResult, requireTool, shuruCommandLine, TestHome } from "./_shuru.ts";
import { freePort, waitFor } from "./_registry.ts";
import { testDeadline } from "./_deadline.ts";
import { Sandbox } from "../mod.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

interface PsRow {
  name: string;
  boot?: string;
  supervisor: { pid: number };
}

async function ps(home: TestHome): Promise<PsRow[]> {
  return JSON.parse(ok(await home.run(["ps", "--json"]), "ps").stdout);
}

/** All output of process `pid` so far, as text. */
async function outputOf(sb: Sandbox, pid: string): Promise<string> {
  const out = await sb.readOutput(pid);
  return new TextDecoder().decode(
    new Uint8Array(out.chunks.flatMap((c) => [...c.data])),
  );
}

/** Waits until the output of `pid` matches `pattern`; returns the output. */
async function untilOutput(sb: Sandbox, pid: string, pattern: RegExp): Promise<string> {
  let text = "";
  await waitFor(`${pattern} from ${pid} of ${sb.name}`, 120_000, async () => {
    text = await outputOf(sb, pid);
    return pattern.test(text);
  }).catch((err) => {
    throw new Error(`${(err as Error).message}; output so far: ${JSON.stringify(text)}`);
  });
  return text;
}

const enc = new TextEncoder();

/** A Python process that adds the numbers it reads and prints the running sum. */
const SUM_PY = "import sys\nn = 0\nfor line in sys.stdin:\n" +
  "    n += int(line)\n    print('sum', n, flush=True)\n";

/** The SDK's `shuru` command for this test's home (its assets and accelerator). */
function sdkShuru(home: TestHome): string[] {
  const env = home.env();
  return [
    "/usr/bin/env",
    `SHURU_ASSETS=${env.SHURU_ASSETS}`,
    `SHURU_ACCEL=${env.SHURU_ACCEL}`,
    ...shuruCommandLine(),
  ];
}

testDeadline(1800, "memory checkpoints - save a running sandbox, resume, fork, list, gc");
Deno.test("memory checkpoints - save a running sandbox, resume, fork, list, gc", async (t) => {
  await requireTool("curl", "curl");
  await using home = await TestHome.create();
  const stopAll = async () => {
    for (const row of await ps(home).catch(() => [])) {
      await home.run(["stop", row.name]).catch(() => {});
    }
  };
  try {
    let shellPid = "";
    let sumPid = "";
    await t.step(
      "a running sandbox: a shell variable, a Python sum, a tmpfs file, a server",
      async () => {
        const r = ok(await home.run(["start", "--name", "src"]), "start");
        assertEquals(r.stdout.trim(), "src");
        assertEquals((await ps(home))[0]?.boot, "ready");
        await using sb = await Sandbox.connect("src", { home: home.dir });
        const shell = await sb.spawn(["/bin/bash", "--norc", "-i"], {
          tty: { rows: 24, cols: 80 },
        });
        shellPid = shell.pid;
        await sb.writeInput(shellPid, enc.encode("GREETING=kept-in-the-shell; echo set-$?\n"));
        await untilOutput(sb, shellPid, /set-0/);
        const sum = await sb.spawn(["python3", "-u", "-c", SUM_PY]);
        sumPid = sum.pid;
        await sb.writeInput(sumPid, enc.encode("5\n"));
        await untilOutput(sb, sumPid, /sum 5\n/);
        const w = await sb.exec("echo tmpfs-data > /dev/shm/t && findmnt -no FSTYPE /dev/shm");
        assertEquals(w.stdout, "tmpfs\n", w.stderr);
        await sb.spawn(["python3", "-m", "http.server", "8000", "--directory", "/dev/shm"]);
        await waitFor("the guest's server", 120_000, async () => {
          const c = await sb.exec("curl -sf http://127.0.0.1:8000/t");
          return c.stdout === "tmpfs-data\n";
        });
      },
    );

    await t.step("checkpoint save --memory: paused briefly; the sandbox goes on", async () => {
      const r = ok(
        await home.run(["checkpoint", "save", "live", "--memory", "--sandbox", "src"]),
        "save",
      );
      assert(
        /^saved checkpoint live with memory: sandbox paused [\d.]+ ms, total \d+ ms, [\d.]+ MiB new disk, [\d.]+ MiB new memory$/
          .test(r.stdout.trim()),
        r.stdout,
      );
      await using sb = await Sandbox.connect("src", { home: home.dir });
      await sb.writeInput(sumPid, enc.encode("1\n"));
      await untilOutput(sb, sumPid, /sum 6\n/);
      assertEquals((await sb.exec("cat /dev/shm/t")).stdout, "tmpfs-data\n");
      // A second save of the same sandbox: a name in use is refused in one line.
      const again = await home.run(["checkpoint", "save", "live", "--memory", "--sandbox", "src"]);
      assertEquals(again.code, 2, again.stderr);
      assert(again.stderr.includes("already exists"), again.stderr);
      assertEquals(again.stderr.trim().split("\n").length, 1, again.stderr);
    });

    await t.step("checkpoint list and inspect show the memory and what it stores", async () => {
      const list = JSON.parse(ok(await home.run(["checkpoint", "list", "--json"]), "list").stdout);
      const live = list.find((c: { name: string }) => c.name === "live");
      assertEquals(live?.memory?.size, 2048 * 1048576, JSON.stringify(live));
      assert(live.memory.usedBlocks > 100, JSON.stringify(live.memory));
      const text = ok(await home.run(["checkpoint", "list"]), "list").stdout;
      assert(/live .* 2\.0 GiB \([\d.]+ MiB stored\)/.test(text), text);
      const inspect = JSON.parse(
        ok(await home.run(["checkpoint", "inspect", "live", "--json"]), "inspect").stdout,
      );
      assertEquals(inspect.memory.usedBlocks, live.memory.usedBlocks);
      assert(inspect.memory.stateBytes > 1000, JSON.stringify(inspect.memory));
      const human = ok(await home.run(["checkpoint", "inspect", "live"]), "inspect").stdout;
      assert(/memory: +2\.0 GiB, \d+ blocks stored \([\d.]+ MiB\)/.test(human), human);
    });

    await t.step("run --from resumes it: the tmpfs file, the server, the processes", async () => {
      const script = [
        "cat /dev/shm/t",
        // The server was serving when saved: it answers at once.
        'echo "served=$(curl -sf --max-time 10 http://127.0.0.1:8000/t)"',
        // (The brackets keep this shell's own command line from matching.)
        'echo "procs=$(pgrep -fc "[h]ttp.server|[s]um")"',
      ].join("; ");
      const r = ok(
        await home.run(["run", "-v", "--from", "live", "--", "sh", "-c", script]),
        "run --from",
      );
      assert(r.stderr.includes("shuru: resumed a memory checkpoint"), r.stderr);
      assertEquals(r.stdout, "tmpfs-data\nserved=tmpfs-data\nprocs=2\n", r.stderr);
    });

    await t.step(
      "start --from: the shell, the sum and the server go on; -p reaches it",
      async () => {
        const port = freePort();
        ok(
          await home.run(["start", "--from", "live", "--name", "copy", "-p", `${port}:8000`]),
          "s",
        );
        const row = (await ps(home)).find((r) => r.name === "copy");
        assertEquals(row?.boot, "checkpoint");
        await using sb = await Sandbox.connect("copy", { home: home.dir });
        assertEquals((sb.info.sandbox as Record<string, unknown>).boot, "checkpoint");
        const pids = (await sb.ps()).filter((p) => p.state === "running").map((p) => p.pid);
        assert(pids.includes(shellPid) && pids.includes(sumPid), JSON.stringify(await sb.ps()));
        await sb.writeInput(shellPid, enc.encode('echo "greeting=$GREETING"\n'));
        await untilOutput(sb, shellPid, /greeting=kept-in-the-shell/);
        // The sum as it was saved (5), not the source's later 6.
        await sb.writeInput(sumPid, enc.encode("7\n"));
        const sum = await untilOutput(sb, sumPid, /sum 12\n/);
        assert(!sum.includes("sum 6"), sum);
        const res = await fetch(`http://127.0.0.1:${port}/t`);
        assertEquals(await res.text(), "tmpfs-data\n");
        ok(await home.run(["stop", "copy"]), "stop copy");
      },
    );

    await t.step("start --from --count forks: each goes on alone and is unique", async () => {
      const r = ok(
        await home.run(["start", "--from", "live", "--count", "2", "--name", "fork"]),
        "fork",
      );
      assertEquals(r.stdout.trim().split("\n"), ["fork-1", "fork-2"]);
      const seen: Record<string, string>[] = [];
      for (const name of ["fork-1", "fork-2"]) {
        await using sb = await Sandbox.connect(name, { home: home.dir });
        await sb.writeInput(sumPid, enc.encode(name === "fork-1" ? "1\n" : "2\n"));
        await untilOutput(sb, sumPid, name === "fork-1" ? /sum 6\n/ : /sum 7\n/);
        const id = await sb.exec(
          "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /etc/machine-id",
        );
        const [urandom, machineId] = id.stdout.trim().split("\n");
        seen.push({ urandom: urandom!, machineId: machineId! });
      }
      assert(seen[0]!.urandom !== seen[1]!.urandom, JSON.stringify(seen));
      assert(seen[0]!.machineId !== seen[1]!.machineId, JSON.stringify(seen));
      assertEquals(
        (await ps(home)).filter((x) => x.name.startsWith("fork-")).map((x) => x.boot),
        ["checkpoint", "checkpoint"],
      );
      ok(await home.run(["stop", "fork-1"]), "stop");
      ok(await home.run(["stop", "fork-2"]), "stop");
    });

    await t.step("SDK: Sandbox.fork and Sandbox.fromCheckpoint resume the processes", async () => {
      const forks = await Sandbox.fork("live", 2, {
        home: home.dir,
        name: "sdkfork",
        shuru: sdkShuru(home),
      });
      try {
        assertEquals(forks.map((f) => f.name), ["sdkfork-1", "sdkfork-2"]);
        for (const sb of forks) {
          assertEquals((sb.info.sandbox as Record<string, unknown>).boot, "checkpoint");
          await sb.writeInput(sumPid, enc.encode("10\n"));
          await untilOutput(sb, sumPid, /sum 15\n/);
        }
      } finally {
        for (const sb of forks) await sb.stop().catch(() => {});
      }
      await using one = await Sandbox.fromCheckpoint("live", {
        home: home.dir,
        name: "sdkone",
        shuru: sdkShuru(home),
      });
      assertEquals((await one.exec("cat /dev/shm/t")).stdout, "tmpfs-data\n");
    });

    await t.step(
      "store gc keeps the memory image while the checkpoint exists, frees it after",
      async () => {
        await stopAll();
        const memDir = join(home.dir, "store", "memory");
        const kept = JSON.parse(ok(await home.run(["store", "gc", "--json"]), "gc").stdout);
        assertEquals(kept.removedMemoryFiles, 0, JSON.stringify(kept));
        const cached = (await Array.fromAsync(Deno.readDir(memDir))).filter((e) =>
          e.name.endsWith(".ram")
        );
        assertEquals(cached.length, 1, "the RAM file written back for the resumes is cached");
        const r = ok(await home.run(["run", "--from", "live", "--", "cat", "/dev/shm/t"]), "run");
        assertEquals(r.stdout, "tmpfs-data\n");
        const inspect = JSON.parse(
          ok(await home.run(["checkpoint", "inspect", "live", "--json"]), "inspect").stdout,
        );
        ok(await home.run(["checkpoint", "delete", "live"]), "delete");
        const freed = JSON.parse(ok(await home.run(["store", "gc", "--json"]), "gc").stdout);
        assertEquals(freed.removedMemoryFiles, 1, JSON.stringify(freed));
        // Every chunk of its memory and disk that nothing else holds: at least the memory's own.
        assert(
          freed.removedChunks >= inspect.memory.usedBlocks * 0.5,
          `${JSON.stringify(freed)} vs ${inspect.memory.usedBlocks} memory blocks`,
        );
        assertEquals(
          (await Array.fromAsync(Deno.readDir(memDir))).filter((e) => e.name.endsWith(".ram")),
          [],
        );
      },
    );
  } finally {
    await stopAll();
  }
});
