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
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(order.sort((a, b) => a - b), [3, 7, 19]);
    for (const [i, [, w]] of pipes.entries()) {
      if (![3, 7, 19].includes(i)) libc.writeNonBlocking(w, new Uint8Array([1]));
    }
    const revents = await Promise.all(waits);
    for (const ev of revents) assertEquals(ev & LINUX.POLLIN, LINUX.POLLIN);
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
  const wait = poller.wait(r, LINUX.POLLIN, ac.signal);
  setTimeout(() => ac.abort(), 20);
  assertEquals(await wait, 0);
  await poller.release(r);
  libc.close(r);
  libc.close(w);
});
