import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { BlockBackendError } from "./backend.ts";
import { FileBackend } from "./file_backend.ts";

async function withFile(
  size: number,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbd-file-" });
  try {
    const path = `${dir}/f.raw`;
    await Deno.writeFile(path, Uint8Array.from({ length: size }, (_, i) => (i * 7) & 0xff));
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("FileBackend - concurrent positional reads and writes land where they should", async () => {
  await withFile(1 << 20, async (path) => {
    const b = await FileBackend.open(path);
    try {
      assertEquals([b.size, b.readOnly, b.multiConn], [1 << 20, false, true]);
      await Promise.all(
        Array.from({ length: 64 }, (_, k) => b.write(k * 16384, new Uint8Array(8192).fill(k + 1))),
      );
      const reads = await Promise.all(
        Array.from({ length: 64 }, (_, k) => b.read(k * 16384, 16384)),
      );
      reads.forEach((r, k) => {
        assert(r.subarray(0, 8192).every((x) => x === k + 1), `block ${k} written part`);
        const i = k * 16384 + 8192;
        assertEquals(r[8192], (i * 7) & 0xff, `block ${k} untouched part`);
      });
      const target = new Uint8Array(100).fill(0xee);
      await b.readInto(8202, target); // inside an untouched half-block
      assertEquals(target, Uint8Array.from({ length: 100 }, (_, i) => ((i + 8202) * 7) & 0xff));
    } finally {
      await b.close();
    }
  });
});

Deno.test("FileBackend - a size past the end of the file reads zeros and writes grow it", async () => {
  await withFile(4096, async (path) => {
    const b = await FileBackend.open(path, { size: 16384 });
    try {
      const r = new Uint8Array(8192).fill(0xff); // stale bytes must be overwritten by zeros
      await b.readInto(2048, r);
      assertEquals(r.subarray(2048).every((x) => x === 0), true);
      assertEquals(r[0], (2048 * 7) & 0xff);
      await b.write(12288, new Uint8Array(4096).fill(3));
      assertEquals((await Deno.stat(path)).size, 16384);
      const ext = await b.blockStatus(0, 16384);
      assertEquals(ext.reduce((n, e) => n + e.length, 0), 16384);
    } finally {
      await b.close();
    }
  });
});

Deno.test("FileBackend - zeroing, trim and block status", async () => {
  await withFile(1 << 20, async (path) => {
    const b = await FileBackend.open(path);
    try {
      assertEquals(b.canFastZero, true);
      await b.writeZeroes(65536, 65536, { fastZero: true });
      await b.writeZeroes(262144, 65536, { noHole: true });
      await b.trim(524288, 65536);
      assert((await b.read(65536, 65536)).every((x) => x === 0));
      assert((await b.read(262144, 65536)).every((x) => x === 0));
      const ext = await b.blockStatus(0, 1 << 20);
      const holes = ext.reduce<[number, number][]>((acc, e) => {
        const start = acc.length === 0 ? 0 : acc[acc.length - 1]![0] + acc[acc.length - 1]![1];
        acc.push([start, e.length]);
        return acc;
      }, []).filter((_, i) => ext[i]!.hole);
      // Holes were punched by the plain zeroing and the trim; NO_HOLE kept its range allocated.
      assertEquals(holes, [[65536, 65536], [524288, 65536]]);
      await b.flush();
      await b.write(0, new Uint8Array([1, 2, 3]), { fua: true });
      assertEquals(await b.read(0, 3), new Uint8Array([1, 2, 3]));
    } finally {
      await b.close();
    }
  });
});

Deno.test("FileBackend - read-only refuses every write with EPERM", async () => {
  await withFile(65536, async (path) => {
    const b = await FileBackend.open(path, { readOnly: true });
    try {
      assertEquals(b.canFastZero, false);
      for (
        const op of [
          () => b.write(0, new Uint8Array(1)),
          () => b.writeZeroes(0, 1),
          () => b.trim(0, 1),
        ]
      ) {
        const err = await assertRejects(op);
        assert(err instanceof BlockBackendError && err.code === "EPERM", String(err));
      }
      await b.flush(); // allowed: nothing to make durable
    } finally {
      await b.close();
    }
  });
});

Deno.test("FileBackend - opening a directory fails with a clear message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbd-file-" });
  try {
    await assertRejects(() => FileBackend.open(dir, { readOnly: true }), "not a regular file");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
