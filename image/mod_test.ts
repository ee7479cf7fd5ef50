import { assert, assertEquals } from "../tests/_assert.ts";
import { imageCacheDir, pruneImages, usableBytes } from "./mod.ts";

Deno.test("imageCacheDir - keyed by format, config digest and disk size", () => {
  const d = "sha256:" + "ab".repeat(32);
  assertEquals(imageCacheDir("/i", d, 4096 * 1048576), `/i/v1-${"ab".repeat(32)}-4096m`);
  assert(usableBytes(4096 * 1048576) < 4096 * 1048576);
});

Deno.test("pruneImages - removes conversions, blobs and leftovers; counts allocated bytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/v1-x-4096m`);
    await Deno.writeFile(`${dir}/v1-x-4096m/rootfs.ext4`, new Uint8Array(64 * 1024).fill(1));
    await Deno.mkdir(`${dir}/blobs/sha256`, { recursive: true });
    await Deno.writeTextFile(`${dir}/blobs/sha256/ab`, "layer");
    const r = await pruneImages(dir);
    assertEquals(r.removed.sort(), ["blobs", "v1-x-4096m"]);
    assert(r.bytes >= 64 * 1024, String(r.bytes));
    assertEquals(await Array.fromAsync(Deno.readDir(dir)), []);
    assertEquals((await pruneImages(`${dir}/missing`)).removed, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
