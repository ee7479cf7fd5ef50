import { assertEquals } from "../tests/assert.ts";
import * as libc from "./libc.ts";
import { Poller } from "./poller.ts";

const { LINUX } = libc;

function nonBlockingPipe(): [number, number] {
  const [r, w] = libc.pipe();
  libc.setNonBlocking(r, true);
  return [r, w];
}

Deno.test("Poller - one poll serves many waiting fds; each wakes when its data arrives", async () => {
  const poller = new Poller();
  const pipes = Array.from({ length: 20 }, nonBlockingPipe);
  try {
    const order: number[] = [];
    const waits = pipes.map(([r], i) =>
      poller.wait(r, LINUX.POLLIN).then((ev) => order.push(i) && ev)
    );
    await new Promise((r) => setTimeout(r, 20));
    for (const i of [7, 3, 19]) libc.writeNonBlocking(pipes[i]![1], new Uint8Array([1]));
    // However long the wakes take: those three, and no other fd, woke.
    await Promise.all([7, 3, 19].map((i) => waits[i]));
    assertEquals(order.sort((a, b) => a - b), [3, 7, 19]);
    for (const [i, [, w]] of pipes.entries()) {
      if (![3, 7, 19].includes(i)) libc.writeNonBlocking(w, new Uint8Array([1]));
    }
    const revents = await Promise.all(waits);
    for (const ev of revents) assertEquals((ev as number) & LINUX.POLLIN, LINUX.POLLIN);
  } finally {
    for (const [r, w] of pipes) {
      libc.close(r);
      libc.close(w);
    }
  }
});

Deno.test("Poller - release ends waits on an fd and resolves once it is safe to close", async () => {
  const poller = new Poller();
  const [r, w] = nonBlockingPipe();
  const wait = poller.wait(r, LINUX.POLLIN);
  await new Promise((res) => setTimeout(res, 20));
  await poller.release(r);
  assertEquals(await wait, 0);
  libc.close(r);
  libc.close(w);
});

Deno.test("Poller - an aborted wait resolves with 0 and the loop stops", async () => {
  const poller = new Poller();
  const [r, w] = nonBlockingPipe();
  const ac = new AbortController();
  const wait = poller.wait(r, LINUX.POLLIN, { signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  assertEquals(await wait, 0);
  await poller.release(r);
  libc.close(r);
  libc.close(w);
});

Deno.test('Poller - a wait with a deadline ends with "timeout"; data before it wins', async () => {
  const poller = new Poller();
  const [r, w] = nonBlockingPipe();
  try {
    const started = performance.now();
    assertEquals(await poller.wait(r, LINUX.POLLIN, { timeoutMs: 50 }), "timeout");
    const waited = performance.now() - started;
    assertEquals(waited >= 49, true, `timed out after ${waited} ms`);
    const wait = poller.wait(r, LINUX.POLLIN, { timeoutMs: 5000 });
    libc.writeNonBlocking(w, new Uint8Array([1]));
    assertEquals(((await wait) as number) & LINUX.POLLIN, LINUX.POLLIN);
  } finally {
    await poller.release(r);
    libc.close(r);
    libc.close(w);
  }
});

Deno.test("Poller - sleeps end in deadline order beside an fd wait, and abort early", async () => {
  const poller = new Poller();
  const [r, w] = nonBlockingPipe();
  try {
    const order: string[] = [];
    const fdWait = poller.wait(r, LINUX.POLLIN).then((ev) => {
      order.push("fd");
      return ev;
    });
    const started = performance.now();
    const long = poller.sleep(120).then((slept) => order.push(`120:${slept}`));
    const short = poller.sleep(30).then((slept) => order.push(`30:${slept}`));
    const ac = new AbortController();
    const aborted = poller.sleep(10_000, ac.signal).then((slept) => order.push(`abort:${slept}`));
    await short;
    assertEquals(performance.now() - started >= 29, true);
    ac.abort();
    await aborted;
    await long;
    assertEquals(performance.now() - started >= 119, true);
    libc.writeNonBlocking(w, new Uint8Array([1]));
    await fdWait;
    assertEquals(order, ["30:true", "abort:false", "120:true", "fd"]);
    // An already aborted signal: no wait at all.
    assertEquals(await poller.sleep(10_000, AbortSignal.abort()), false);
  } finally {
    await poller.release(r);
    libc.close(r);
    libc.close(w);
  }
});
