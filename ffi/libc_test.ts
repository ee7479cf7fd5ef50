import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { addEntropy, dataRanges, LibcError } from "./libc.ts";

Deno.test("dataRanges - reports where a sparse file holds data (SEEK_DATA/SEEK_HOLE)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-libc-" });
  try {
    const path = `${dir}/sparse`;
    const f = await Deno.open(path, { write: true, create: true });
    await f.truncate(64 << 20);
    await f.seek(8 << 20, Deno.SeekMode.Start);
    await f.write(new Uint8Array(100_000).fill(1));
    await f.seek(40 << 20, Deno.SeekMode.Start);
    await f.write(new Uint8Array(10).fill(2));
    f.close();
    // ext4 reports data in whole blocks (4 KiB).
    assertEquals(dataRanges(path), [
      [8 << 20, (8 << 20) + 102_400],
      [40 << 20, (40 << 20) + 4096],
    ]);
    await Deno.writeFile(`${dir}/empty`, new Uint8Array(0));
    assertEquals(dataRanges(`${dir}/empty`), []);
    assertThrows(() => dataRanges(`${dir}/missing`), "ENOENT");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("addEntropy - refuses to credit more bits than the bytes carry, before any ioctl", () => {
  assertThrows(() => addEntropy(-1, new Uint8Array(32), 257), "Cannot credit 257 bits");
  // A bad fd reaches the kernel and comes back as EBADF (nothing is added anywhere).
  const err = assertThrows(() => addEntropy(-1, new Uint8Array(32), 256), "EBADF");
  assertEquals(err instanceof LibcError, true);
});
