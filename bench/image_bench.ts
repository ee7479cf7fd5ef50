/**
 * `--image`, measured against references taken in the same run:
 *
 * 1. The first use of the Debian + python3 image from a registry on 127.0.0.1 (pull, verify,
 *    unpack, ext4: `ensureImage`, what the first `run --image` does before it boots) against
 *    `skopeo copy` of the same image to a local `oci:` folder (pull and write the blobs; the
 *    floor of any client). Alternated, fresh caches each time. Also timed: ingesting the result
 *    into the store, which the first checkpoint saved from the image pays (once).
 * 2. `shuru run --image REF -- true` once the image is converted (from the cache) against
 *    `shuru run -- true` on the default guest image. Alternated.
 *
 * Usage: deno run -A bench/image_bench.ts [runs]   (SHURU_ACCEL defaults to tcg here)
 *
 * @module
 */

import { join } from "node:path";
import { debianPythonImage, skopeoCopy } from "../tests/_images.ts";
import { TestRegistry } from "../tests/_registry.ts";
import { ensureImage, registryResolver } from "../image/mod.ts";
import { Store } from "../store/mod.ts";
import { median } from "./_stats.ts";

const RUNS = Number(Deno.args[0] ?? 3);
const ROOT = new URL("..", import.meta.url).pathname;
const DISK = 4096 * 1048576;

function fmt(xs: number[]): string {
  return `median ${(median(xs) / 1000).toFixed(1)} s (min ${
    (Math.min(...xs) / 1000).toFixed(1)
  }, ` +
    `max ${(Math.max(...xs) / 1000).toFixed(1)})`;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const work = await Deno.makeTempDir({ prefix: "shuru-image-bench-" });
await using reg = await TestRegistry.start();
try {
  console.log("building the Debian + python3 image with umoci and pushing it ...");
  const ref = `${reg.host}/bench/py:1`;
  await skopeoCopy(await debianPythonImage(join(work, "src")), `docker://${ref}`);

  const convert: number[] = [];
  const ingest: number[] = [];
  const skopeo: number[] = [];
  const phases: Record<string, number[]> = {};
  for (let i = 0; i < RUNS; i++) {
    const dir = join(work, `run${i}`);
    await Deno.mkdir(dir);
    skopeo.push(await time(() => skopeoCopy(`docker://${ref}`, `oci:${join(dir, "oci")}:py`)));
    const store = await Store.open(join(dir, "store"));
    let timings: Record<string, number> = {};
    let rootfs = "";
    const pullStarted = performance.now();
    let pullMs = 0;
    convert.push(
      await time(async () => {
        const img = await ensureImage(ref, {
          imagesDir: join(dir, "images"),
          diskBytes: DISK,
          registry: registryResolver(),
          onProgress: (p) => {
            if (p.text.startsWith("pulling") && p.fraction === 1) {
              pullMs = performance.now() - pullStarted;
            }
          },
        });
        timings = img.timings;
        rootfs = img.rootfs;
      }),
    );
    ingest.push(await time(() => store.prepareBase(rootfs)));
    for (const [k, v] of Object.entries({ ...timings, pull: pullMs })) (phases[k] ??= []).push(v);
    await Deno.remove(dir, { recursive: true });
  }
  console.log(`\nfirst use of the image (pull + unpack + ext4):          ${fmt(convert)}`);
  console.log(`skopeo copy to an oci: folder (pull only):            ${fmt(skopeo)}`);
  console.log(`ratio: ${(median(convert) / median(skopeo)).toFixed(2)}x skopeo copy`);
  console.log(`ingest into the store (first checkpoint, once): ${fmt(ingest)}`);
  console.log(
    "phases (median ms): " +
      Object.entries(phases).map(([k, v]) => `${k} ${Math.round(median(v))}`).join(", "),
  );

  // 2. Boots: from the image cache vs the default guest.
  const home = join(work, "home");
  const env = {
    SHURU_HOME: home,
    SHURU_ACCEL: Deno.env.get("SHURU_ACCEL") ?? "tcg",
    SHURU_ASSETS: Deno.env.get("SHURU_ASSETS") ??
      join(Deno.env.get("HOME") ?? "/root", ".local/share/shuru/assets"),
  };
  const shuru = async (args: string[]) => {
    const out = await new Deno.Command(join(ROOT, "shuru"), {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  };
  await shuru(["run", "--image", ref, "--", "true"]); // converts once
  const cached: number[] = [];
  const plain: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    cached.push(await time(() => shuru(["run", "--image", ref, "--", "true"])));
    plain.push(await time(() => shuru(["run", "--", "true"])));
  }
  console.log(`\nrun --image (cached) -- true: ${fmt(cached)}`);
  console.log(`run -- true (default guest):  ${fmt(plain)}`);
  console.log(`ratio: ${(median(cached) / median(plain)).toFixed(2)}x the default guest`);
} finally {
  await Deno.remove(work, { recursive: true });
}
