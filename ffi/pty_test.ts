import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { Pty, spawnPty } from "./pty.ts";

const decoder = new TextDecoder();

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  for await (const chunk of stream) out += decoder.decode(chunk, { stream: true });
  return out;
}

/** Reads until `pattern` has appeared in the output; returns everything read so far. */
async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  pattern: RegExp,
  sofar = "",
): Promise<string> {
  let out = sofar;
  while (!pattern.test(out)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`PTY output ended before ${pattern}: ${JSON.stringify(out)}`);
    out += decoder.decode(value, { stream: true });
  }
  return out;
}

Deno.test("spawnPty - process sees a terminal of the requested size as its controlling tty", async () => {
  const p = spawnPty(
    [
      "/bin/sh",
      "-c",
      'tty; stty size; test -t 0 && test -t 1 && echo isatty; echo "T=$TERM"; ps -o pid=,pgid=,sid=,tty= -p $$',
    ],
    { rows: 33, cols: 101, env: { PATH: "/usr/bin:/bin" } },
  );
  const out = await readAll(p.pty.readable);
  const status = await p.status;
  assertEquals(status, { exited: true, code: 0 }, out);
  const lines = out.split("\r\n");
  assertEquals(lines[0], p.pty.slavePath);
  assertEquals(lines[1], "33 101");
  assertEquals(lines[2], "isatty");
  assertEquals(lines[3], "T=xterm-256color");
  const [pid, pgid, sid, tty] = lines[4]!.trim().split(/\s+/);
  assertEquals(Number(pid), p.pid);
  assertEquals(Number(pgid), p.pid, "own process group");
  assertEquals(Number(sid), p.pid, "own session");
  assertEquals("/dev/" + tty, p.pty.slavePath, "controlling terminal");
});

Deno.test("spawnPty - resize is seen by the child (SIGWINCH and stty size)", async () => {
  const p = spawnPty(
    [
      "/bin/sh",
      "-c",
      "trap 'echo winch; stty size' WINCH; echo ready; until read line; do :; done; echo got:$line",
    ],
    { rows: 24, cols: 80, env: { PATH: "/usr/bin:/bin" } },
  );
  const reader = p.pty.readable.getReader();
  let out = await readUntil(reader, /ready/);
  p.pty.resize({ rows: 50, cols: 132 });
  out = await readUntil(reader, /winch\r\n50 132/, out);
  assertEquals(p.pty.size(), { rows: 50, cols: 132 });
  await p.pty.write(new TextEncoder().encode("hello\n"));
  out = await readUntil(reader, /got:hello/, out);
  assert(out.includes("hello\r\n"), "typed input is echoed by the terminal");
  reader.releaseLock();
  await readAll(p.pty.readable);
  assertEquals(await p.status, { exited: true, code: 0 });
});

Deno.test("spawnPty - exit code and signal death are reported", async () => {
  const p = spawnPty(["/bin/sh", "-c", "exit 7"], { rows: 24, cols: 80, env: {} });
  await readAll(p.pty.readable);
  assertEquals(await p.status, { exited: true, code: 7 });
  const q = spawnPty(["/bin/sh", "-c", "kill -9 $$"], { rows: 24, cols: 80, env: {} });
  await readAll(q.pty.readable);
  assertEquals(await q.status, { exited: false, signal: 9 });
});

Deno.test("spawnPty - output ends after exit even if a background child holds the terminal", async () => {
  const p = spawnPty(["/bin/sh", "-c", "sleep 5 & echo bye"], {
    rows: 24,
    cols: 80,
    env: { PATH: "/usr/bin:/bin" },
  });
  const out = await readAll(p.pty.readable);
  assert(out.includes("bye"), out);
  assertEquals(await p.status, { exited: true, code: 0 });
  // The background sleep is in the child's group; clean it up.
  try {
    Deno.kill(p.pid, "SIGKILL");
  } catch { /* leader already gone */ }
  const { kill } = await import("./libc.ts");
  try {
    kill(-p.pid, 9);
  } catch { /* already gone */ }
});

Deno.test("spawnPty - large output is passed through completely", async () => {
  const p = spawnPty(["/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END"], {
    rows: 24,
    cols: 80,
    env: { PATH: "/usr/bin:/bin" },
  });
  let count = 0;
  let tail = "";
  for await (const chunk of p.pty.readable) {
    for (const b of chunk) if (b === 0x61) count++;
    tail = (tail + decoder.decode(chunk)).slice(-20);
  }
  assertEquals(count, 3000000);
  assert(tail.includes("END"), tail);
  assertEquals(await p.status, { exited: true, code: 0 });
});

Deno.test("Pty.open - rejects impossible sizes", () => {
  assertThrows(() => Pty.open({ rows: 0, cols: 80 }), "rows");
  assertThrows(() => Pty.open({ rows: 24, cols: 70000 }), "cols");
});

Deno.test("Pty - close while a read is waiting ends the stream", async () => {
  using pty = Pty.open({ rows: 24, cols: 80 });
  const reading = readAll(pty.readable);
  await new Promise((r) => setTimeout(r, 50));
  pty.close();
  assertEquals(await reading, "");
});
