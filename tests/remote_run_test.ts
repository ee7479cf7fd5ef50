/**
 * Lazy start with a real guest: `shuru run --from REF` boots from a checkpoint in a registry
 * without downloading it (bytes fetched < checkpoint size, counted by a front on loopback),
 * reads the right bytes, keeps them (the second run fetches nothing), and when the registry
 * goes away mid-run the guest gets an I/O error for what was not fetched yet: no hang, no
 * wrong data.
 */

import { assert, assertEquals } from "./assert.ts";
import { FaultyFront, TestRegistry } from "./_registry.ts";
import { shuruCommandLine, TestHome } from "./_shuru.ts";

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs shuru in `home` and fails the test if it takes longer than `ms`. */
async function shuru(home: TestHome, args: string[], ms = 240_000): Promise<Out> {
  const [cmd, ...rest] = shuruCommandLine();
  const child = new Deno.Command(cmd!, {
    args: [...rest, ...args],
    env: home.env(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

function fetched(stderr: string): { chunks: number; bytes: number } {
  const m = /lazy start from \S+: fetched (\d+) chunks \((\d+) bytes\)/.exec(stderr);
  assert(m, `no lazy-start line in:\n${stderr}`);
  return { chunks: Number(m[1]), bytes: Number(m[2]) };
}

Deno.test({
  name: "run --from REF - boots lazily, second run local, registry gone mid-run gives EIO",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using reg = await TestRegistry.start();
    await using front = FaultyFront.start(`http://${reg.host}`);
    await using h1 = await TestHome.create();
    const create = await shuru(h1, [
      "checkpoint",
      "create",
      "base",
      "--",
      "sh",
      "-c",
      "head -c 16M /dev/urandom > /a && head -c 16M /dev/urandom > /b && md5sum /a && sync",
    ]);
    assertEquals(create.code, 0, create.stderr);
    const md5 = create.stdout.trim().split(/\s+/)[0]!;
    const push = await shuru(h1, ["checkpoint", "push", "base", reg.ref("env/base:1")]);
    assertEquals(push.code, 0, push.stderr);
    const inspect = JSON.parse(
      (await shuru(h1, ["checkpoint", "inspect", "base", "--json"])).stdout,
    );
    const size = inspect.usedBytes as number;

    await using h2 = await TestHome.create();
    const lazyRef = `${front.host}/env/base:1`;
    front.resetCounters();
    const r1 = await shuru(h2, ["run", "-v", "--from", lazyRef, "--", "md5sum", "/a"]);
    assertEquals(r1.code, 0, r1.stderr);
    // Lazily read data is the data that was saved.
    assertEquals(r1.stdout.trim().split(/\s+/)[0], md5);
    const f1 = fetched(r1.stderr);
    assert(f1.chunks > 0, r1.stderr);
    assert(front.blobBytes < size, `fetched ${front.blobBytes} of ${size}`);
    assert(f1.bytes <= front.blobBytes, `${f1.bytes} vs ${front.blobBytes}`);
    console.log(`lazy boot fetched ${front.blobBytes} of ${size} bytes (${f1.chunks} chunks)`);

    // The same run again reads everything it needs locally.
    front.resetCounters();
    const r2 = await shuru(h2, ["run", "-v", "--from", lazyRef, "--", "md5sum", "/a"]);
    assertEquals(r2.code, 0, r2.stderr);
    assertEquals(fetched(r2.stderr).chunks, 0);
    assertEquals(front.blobBytes, 0);

    // The registry goes away while the guest runs: reading /b (never fetched) fails with EIO.
    const [cmd, ...rest] = shuruCommandLine();
    const child = new Deno.Command(cmd!, {
      args: [
        ...rest,
        "run",
        "--from",
        reg.ref("env/base:1"),
        "--",
        "sh",
        "-c",
        'echo ready; read x; cat /b > /dev/null; echo "rc=$?"',
      ],
      env: h2.env(),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
    try {
      const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let seen = "";
      while (!seen.includes("ready")) {
        const { value, done } = await stdout.read();
        if (done) break;
        seen += value;
      }
      assert(seen.includes("ready"), `guest never got ready: ${seen}`);
      await reg.stop();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("go\n"));
      await w.close();
      while (true) {
        const { value, done } = await stdout.read();
        if (done) break;
        seen += value;
      }
      const status = await child.status;
      const stderr = await new Response(child.stderr).text();
      assert(seen.includes("rc=1"), `stdout: ${seen}\nstderr: ${stderr}`);
      assert(/Input\/output error/.test(stderr), stderr);
      const lines = stderr.split("\n").filter((l) => l.startsWith("shuru: Cannot fetch chunk"));
      assertEquals(lines.length, 1, stderr);
      assertEquals(status.code, 0, stderr);
    } finally {
      clearTimeout(timer);
    }
  },
});
