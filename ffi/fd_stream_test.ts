import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import * as libc from "./libc.ts";
import { FdStream } from "./fd_stream.ts";

/** A FIFO opened O_RDWR (Linux allows it): one fd that can be both written and read. */
async function fifo(): Promise<{ fd: number; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-fd-" });
  const path = `${dir}/fifo`;
  const out = await new Deno.Command("mkfifo", { args: [path] }).output();
  if (!out.success) throw new Error("mkfifo failed: apt-get install coreutils");
  const fd = libc.open(path, libc.LINUX.O_RDWR | libc.LINUX.O_CLOEXEC);
  return { fd, cleanup: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("FdStream - a write larger than the pipe waits for the reader, bytes arrive intact", async () => {
  const { fd, cleanup } = await fifo();
  try {
    const s = new FdStream(fd);
    const data = new Uint8Array(1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i * 7;
    let writeDone = false;
    const writing = s.write(data).then(() => writeDone = true);
    await new Promise((r) => setTimeout(r, 50));
    assert(!writeDone, "a 1 MiB write cannot fit in a 64 KiB pipe before anyone reads");
    const reader = s.readable.getReader();
    const got = new Uint8Array(data.length);
    let n = 0;
    while (n < data.length) {
      const { value } = await reader.read();
      got.set(value!, n);
      n += value!.length;
    }
    await writing;
    assertEquals(got, data);
    s.close();
    assertEquals((await reader.read()).done, true);
    await assertRejects(() => s.write(new Uint8Array(1)), "closed fd");
  } finally {
    await cleanup();
  }
});

Deno.test("FdStream - endWhenQuiet ends the readable after a silent period", async () => {
  const { fd, cleanup } = await fifo();
  try {
    const s = new FdStream(fd);
    await s.write(new TextEncoder().encode("tail"));
    s.endWhenQuiet(30);
    let text = "";
    for await (const c of s.readable) text += new TextDecoder().decode(c);
    assertEquals(text, "tail");
  } finally {
    await cleanup();
  }
});

Deno.test("FdStream - keepFdOpen ends the streams but leaves the fd to its owner", async () => {
  const { fd, cleanup } = await fifo();
  try {
    const s = new FdStream(fd, { keepFdOpen: true });
    const reading = s.readable.getReader().read();
    await s.close();
    assertEquals((await reading).done, true);
    assert(libc.isOpen(fd), "fd still open");
    const again = new FdStream(fd);
    await again.write(new TextEncoder().encode("x"));
    const { value } = await again.readable.getReader().read();
    assertEquals(value, new Uint8Array([0x78]));
    await again.close();
    assert(!libc.isOpen(fd), "closed by the owning stream");
  } finally {
    await cleanup();
  }
});
