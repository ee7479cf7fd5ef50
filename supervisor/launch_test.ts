import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { readHandedSecrets } from "./launch.ts";

function stdinOf(chunks: Uint8Array[], terminal = false) {
  return {
    readable: ReadableStream.from(chunks),
    isTerminal: () => terminal,
  };
}

Deno.test("readHandedSecrets - reads the pipe to its end; empty or a terminal is none", async () => {
  const enc = new TextEncoder();
  const text = JSON.stringify([{ name: "K", value: "sk-0123456789", hosts: ["a.test"] }]);
  assertEquals(
    await readHandedSecrets(stdinOf([enc.encode(text.slice(0, 9)), enc.encode(text.slice(9))])),
    text,
  );
  assertEquals(await readHandedSecrets(stdinOf([])), undefined);
  assertEquals(await readHandedSecrets(stdinOf([enc.encode(text)], true)), undefined);
});

Deno.test("readHandedSecrets - refuses more than 1 MiB", async () => {
  const big = new Uint8Array(512 * 1024).fill(0x61);
  await assertRejects(() => readHandedSecrets(stdinOf([big, big, big])), "more than 1 MiB");
});

Deno.test("detachFromTerminal - a new session led by the process; a second call changes nothing", async () => {
  // In a child: setsid(2) would move this test process out of its session.
  const script = `
    import { detachFromTerminal } from ${
    JSON.stringify(new URL("./launch.ts", import.meta.url).href)
  };
    const sid = async () => {
      const out = await new Deno.Command("ps", { args: ["-o", "sid=", "-p", String(Deno.pid)] })
        .output();
      return Number(new TextDecoder().decode(out.stdout).trim());
    };
    const before = await sid();
    detachFromTerminal();
    const after = await sid();
    detachFromTerminal();
    console.log(JSON.stringify({ pid: Deno.pid, before, after, again: await sid() }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assert(r.before !== r.pid, `the child already led its session: ${JSON.stringify(r)}`);
  assertEquals([r.after, r.again], [r.pid, r.pid]);
});
