/**
 * Checkpoints through an OCI registry, against a local `docker-registry` (CNCF distribution)
 * on 127.0.0.1, every figure a ratio against a reference measured in the same run:
 *
 * 1. **Layout**: N random chunks pushed as one blob per chunk vs packs of 16 MiB (time,
 *    requests), and the latency of reading one chunk (GET of its blob vs a range of a pack).
 * 2. **Push** of a fresh checkpoint of the base image (the guest's root filesystem) vs
 *    `skopeo copy` of the same bytes as one blob (an OCI layout on disk to the registry); with
 *    and without zstd, and the bytes each sends.
 * 3. **Second push** after 64 MiB of changes: bytes sent / bytes changed (target <= 1.1).
 * 4. **Lazy start**: `shuru run --from REF -- true` with an empty store, for several readahead
 *    settings: bytes fetched / checkpoint size, and time vs the same run from a local
 *    checkpoint.
 *
 * Usage: deno run -A bench/remote_bench.ts [--skip-lazy] [--lazy-runs N] [--latency-ms MS]
 *
 * `--latency-ms` puts a front on loopback before the registry for the lazy runs that delays
 * every request (a network's round trip), where readahead's fewer requests show.
 *
 * @module
 */

import { join } from "node:path";
import { ensureAssets } from "../assets/mod.ts";
import { homeLayout } from "../host/mod.ts";
import { RegistryClient, sha256Digest } from "../oci/mod.ts";
import { decodeManifest, pullCheckpoint, pushCheckpoint, Store } from "../store/mod.ts";
import { FaultyFront, skopeo, TestRegistry } from "../tests/_registry.ts";
import { runShuru } from "./_shuru.ts";
import { median } from "./_stats.ts";

const MiB = 1024 * 1024;
const BS = 65536;
const args = Deno.args;
const lazyRuns = args.includes("--lazy-runs") ? Number(args[args.indexOf("--lazy-runs") + 1]) : 1;
const latencyMs = args.includes("--latency-ms")
  ? Number(args[args.indexOf("--latency-ms") + 1])
  : 0;

function mib(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`;
}

async function limit<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

await using reg = await TestRegistry.start();
const work = await Deno.makeTempDir({ prefix: "shuru-remote-bench-" });
try {
  // ---- 1. Layout: blob per chunk vs packs.
  {
    const N = 512;
    const chunks = Array.from({ length: N }, () => crypto.getRandomValues(new Uint8Array(BS)));
    const client = new RegistryClient(reg.host);
    let t = performance.now();
    const digests: string[] = [];
    await limit(chunks.map((c, i) => [c, i] as const), 8, async ([c, i]) => {
      const d = await sha256Digest(c);
      digests[i] = d;
      if ((await client.headBlob("layout/per", d)) === null) {
        await client.uploadBlob("layout/per", d, c);
      }
    });
    const perMs = performance.now() - t;
    const per = 16 * MiB / BS;
    const packs: Uint8Array[] = [];
    for (let i = 0; i < N; i += per) {
      const p = new Uint8Array(Math.min(per, N - i) * BS);
      for (let k = 0; k < per && i + k < N; k++) p.set(chunks[i + k]!, k * BS);
      packs.push(p);
    }
    t = performance.now();
    const packDigests: string[] = [];
    await limit(packs.map((p, i) => [p, i] as const), 2, async ([p, i]) => {
      const d = await sha256Digest(p);
      packDigests[i] = d;
      if ((await client.headBlob("layout/pack", d)) === null) {
        await client.uploadBlob("layout/pack", d, p);
      }
    });
    const packMs = performance.now() - t;
    const getMs: number[] = [];
    const rangeMs: number[] = [];
    for (let k = 0; k < 40; k++) {
      const i = (k * 97) % N;
      let t0 = performance.now();
      await client.getBlob("layout/per", digests[i]!, BS);
      getMs.push(performance.now() - t0);
      t0 = performance.now();
      const p = Math.floor(i / per);
      await client.getBlobRange("layout/pack", packDigests[p]!, {
        offset: (i % per) * BS,
        length: BS,
        blobSize: packs[p]!.length,
      });
      rangeMs.push(performance.now() - t0);
    }
    console.log(`layout: ${N} chunks of 64 KiB (${mib(N * BS)})`);
    console.log(
      `  push, blob per chunk: ${perMs.toFixed(0)} ms (${N} blobs, ~${3 * N} requests); ` +
        `packs of 16 MiB: ${packMs.toFixed(0)} ms (${packs.length} blobs); ` +
        `ratio per-chunk/packs ${(perMs / packMs).toFixed(1)}x`,
    );
    console.log(
      `  read one chunk: GET of its blob median ${median(getMs).toFixed(1)} ms; range of a ` +
        `pack median ${median(rangeMs).toFixed(1)} ms; ratio ${
          (median(rangeMs) / median(getMs)).toFixed(2)
        }x`,
    );
  }

  // ---- 2. Push of a fresh checkpoint of the base image vs skopeo copy of the same bytes.
  const assets = await ensureAssets({ assetsDir: homeLayout().assets });
  const store = await Store.open(join(work, "store"), { log: () => {} });
  {
    const dev = await store.openDevice({ base: assets.rootfs }, { overlayDir: join(work, "ov") });
    try {
      await dev.save("base");
    } finally {
      await dev.close();
    }
  }
  const info = await store.inspect("base");
  const size = info.usedBytes;
  console.log(
    `checkpoint of the base image: ${mib(size)} in ${info.distinctChunks} distinct chunks`,
  );
  // The same bytes as one blob in an OCI layout, copied by skopeo.
  const layout = join(work, "layout");
  {
    await Deno.mkdir(join(layout, "blobs", "sha256"), { recursive: true });
    const table = (await Store.open(join(work, "store"))).chunks;
    const idx = await store.readManifestBytes("base");
    const m = decodeManifest(idx);
    const seen = new Set<string>();
    const file = await Deno.open(join(layout, "one.blob"), { write: true, create: true });
    for (let i = 0; i < m.table.entryCount; i++) {
      const h = m.table.get(i);
      if (!h) continue;
      const hex = Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
      if (seen.has(hex)) continue;
      seen.add(hex);
      const data = await table.read(h, BS);
      let off = 0;
      while (off < data.length) off += await file.write(data.subarray(off));
    }
    file.close();
    const blob = await Deno.readFile(join(layout, "one.blob"));
    const blobDigest = await sha256Digest(blob);
    await Deno.rename(
      join(layout, "one.blob"),
      join(layout, "blobs", "sha256", blobDigest.slice(7)),
    );
    const config = new TextEncoder().encode("{}");
    const configDigest = await sha256Digest(config);
    await Deno.writeFile(join(layout, "blobs", "sha256", configDigest.slice(7)), config);
    const manifest = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.bench.config.v1+json", digest: configDigest, size: 2 },
      layers: [{
        mediaType: "application/vnd.bench.blob.v1",
        digest: blobDigest,
        size: blob.length,
      }],
    }));
    const manifestDigest = await sha256Digest(manifest);
    await Deno.writeFile(join(layout, "blobs", "sha256", manifestDigest.slice(7)), manifest);
    await Deno.writeTextFile(join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
    await Deno.writeTextFile(
      join(layout, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: manifestDigest,
          size: manifest.length,
          annotations: { "org.opencontainers.image.ref.name": "one" },
        }],
      }),
    );
  }
  let t = performance.now();
  const sk = await skopeo([
    "copy",
    "--dest-tls-verify=false",
    `oci:${layout}:one`,
    `docker://${reg.ref("bench/skopeo:1")}`,
  ]);
  const skopeoMs = performance.now() - t;
  if (sk.code !== 0) throw new Error(`skopeo copy failed: ${sk.stderr}`);
  t = performance.now();
  const raw = await pushCheckpoint(store, "base", reg.ref("bench/raw:1"), { compress: false });
  const rawMs = performance.now() - t;
  t = performance.now();
  const z = await pushCheckpoint(store, "base", reg.ref("bench/zstd:1"));
  const zMs = performance.now() - t;
  console.log(`push of the fresh checkpoint (${mib(size)}) vs skopeo copy of it as one blob:`);
  console.log(`  skopeo copy: ${skopeoMs.toFixed(0)} ms, ${mib(size)} sent`);
  console.log(
    `  shuru push, raw:  ${rawMs.toFixed(0)} ms, ${mib(raw.bytesSent)} sent in ${raw.packs} ` +
      `packs; time ratio ${(rawMs / skopeoMs).toFixed(2)}x, bytes ratio ${
        (raw.bytesSent / size).toFixed(3)
      }`,
  );
  console.log(
    `  shuru push, zstd: ${zMs.toFixed(0)} ms, ${mib(z.bytesSent)} sent in ${z.packs} ` +
      `packs; time ratio ${(zMs / skopeoMs).toFixed(2)}x, bytes ratio ${
        (z.bytesSent / size).toFixed(3)
      }`,
  );
  t = performance.now();
  const pulled = await pullCheckpoint(
    await Store.open(join(work, "store-pull"), { log: () => {} }),
    reg.ref("bench/zstd:1"),
  );
  const pullMs = performance.now() - t;
  console.log(
    `  shuru pull (zstd): ${pullMs.toFixed(0)} ms, ${mib(pulled.fetchedBytes)} in ` +
      `${pulled.requests} range requests; time ratio vs skopeo copy ${
        (pullMs / skopeoMs).toFixed(2)
      }x`,
  );

  // ---- 3. Second push after 64 MiB of changes.
  {
    const dev = await store.openDevice({ checkpoint: "base" }, {
      overlayDir: join(work, "ov2"),
    });
    try {
      const change = new Uint8Array(64 * MiB);
      for (let o = 0; o < change.length; o += 65536) {
        crypto.getRandomValues(change.subarray(o, o + 65536));
      }
      await dev.write(1024 * MiB, change);
      await dev.save("changed");
    } finally {
      await dev.close();
    }
    for (const compress of [false, true]) {
      const tag = compress ? "zstd" : "raw";
      const r = await pushCheckpoint(store, "changed", reg.ref(`bench/${tag}:2`), { compress });
      console.log(
        `second push after 64 MiB of changes (${tag}): ${mib(r.bytesSent)} sent, ` +
          `${r.newChunks} new chunks, ${r.reusedChunks} reused; bytes sent / bytes changed ` +
          `${(r.bytesSent / (64 * MiB)).toFixed(3)} (target <= 1.1)`,
      );
    }
  }

  // ---- 4. Lazy start vs a local checkpoint.
  if (!args.includes("--skip-lazy")) {
    const env = (home: string, extra: Record<string, string> = {}) => ({
      SHURU_HOME: home,
      SHURU_ASSETS: homeLayout().assets,
      SHURU_ACCEL: Deno.env.get("SHURU_ACCEL") ?? "tcg",
      ...extra,
    });
    const runTrue = async (home: string, from: string, extra: Record<string, string> = {}) => {
      const { wall: ms, stderr } = await runShuru(["run", "-v", "--from", from, "--", "true"], {
        env: env(home, extra),
      });
      const m = /fetched (\d+) chunks \((\d+) bytes\) in (\d+) requests/.exec(stderr);
      return {
        ms,
        chunks: Number(m?.[1] ?? 0),
        bytes: Number(m?.[2] ?? 0),
        requests: Number(m?.[3] ?? 0),
      };
    };
    // The local reference: the same checkpoint pulled into a home of its own.
    const localHome = join(work, "home-local");
    await pullCheckpoint(
      await Store.open(join(localHome, "store"), { log: () => {} }),
      reg.ref("bench/zstd:1"),
      { name: "base" },
    );
    await using front = FaultyFront.start(`http://${reg.host}`);
    front.delayMs = latencyMs;
    const lazyRef = latencyMs > 0 ? `${front.host}/bench/zstd:1` : reg.ref("bench/zstd:1");
    const localMs: number[] = [];
    const lazy = new Map<number, { ms: number[]; bytes: number[]; requests: number[] }>();
    const readaheads = [0, 4, 16, 64];
    for (let round = 0; round < lazyRuns; round++) {
      localMs.push((await runTrue(localHome, "base")).ms);
      for (const ra of readaheads) {
        const home = join(work, `home-lazy-${ra}-${round}`);
        const r = await runTrue(home, lazyRef, {
          SHURU_LAZY_READAHEAD: String(ra),
        });
        const e = lazy.get(ra) ?? { ms: [], bytes: [], requests: [] };
        e.ms.push(r.ms);
        e.bytes.push(r.bytes);
        e.requests.push(r.requests);
        lazy.set(ra, e);
        await Deno.remove(home, { recursive: true }).catch(() => {});
      }
    }
    const local = median(localMs);
    console.log(
      `lazy run --from REF -- true (empty store, ${latencyMs} ms added per request) vs the ` +
        `same run from a local checkpoint (${local.toFixed(0)} ms):`,
    );
    for (const ra of readaheads) {
      const e = lazy.get(ra)!;
      console.log(
        `  readahead ${String(ra).padStart(2)}: ${median(e.ms).toFixed(0)} ms (time ratio ${
          (median(e.ms) / local).toFixed(2)
        }x), fetched ${mib(median(e.bytes))} in ${median(e.requests)} requests; bytes ` +
          `fetched / checkpoint size ${(median(e.bytes) / size).toFixed(3)}`,
      );
    }
  }
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
