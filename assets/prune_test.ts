import { assertEquals } from "../tests/_assert.ts";
import { pruneAssets } from "./mod.ts";

Deno.test("pruneAssets keeps the current version of each architecture and their caches", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-prune-" });
  try {
    const names = ["v1-0123456789abcdef", "v2-x86_64-aaaa", "v2-x86_64-bbbb", "v2-arm64-cccc"];
    for (const n of names) await Deno.mkdir(`${dir}/${n}`);
    await Deno.mkdir(`${dir}/cache/deno-arm64-0.0.1`, { recursive: true });
    await Deno.mkdir(`${dir}/cache/deno-arm64-${Deno.version.deno}`, { recursive: true });
    await Deno.mkdir(`${dir}/cache/apt-arm64`, { recursive: true });
    await Deno.writeTextFile(`${dir}/cache/debian-bookworm-arm64-0000000000000000.tar`, "old");
    const r = await pruneAssets(dir, ["v2-x86_64-aaaa", "v2-arm64-cccc"]);
    assertEquals(r.removed.sort(), [
      "cache/debian-bookworm-arm64-0000000000000000.tar",
      "cache/deno-arm64-0.0.1",
      "v1-0123456789abcdef",
      "v2-x86_64-bbbb",
    ]);
    const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assertEquals(left, ["cache", "v2-arm64-cccc", "v2-x86_64-aaaa"]);
    const cache = (await Array.fromAsync(Deno.readDir(`${dir}/cache`))).map((e) => e.name).sort();
    assertEquals(cache, ["apt-arm64", `deno-arm64-${Deno.version.deno}`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
