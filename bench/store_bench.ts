/**
 * Checkpoint store benchmark. Every figure is measured in this run; ratios compare against a
 * reference from the same run.
 *
 * 1. Hash throughput on 64 KiB blocks: BLAKE3-256 (hash-wasm, the chunk name) vs SHA-256
 *    (WebCrypto), one at a time and (SHA-256 only, async) many in flight.
 * 2. Block size: for 4 KiB..1 MiB, BLAKE3 throughput, save time, and store growth after a
 *    realistic guest write pattern (files of log-uniform size plus scattered 4 KiB metadata
 *    writes), as a ratio of the 4 KiB pages actually changed.
 * 3. Save after writing 64 MiB to a 4 GiB and a 16 GiB device (target < 1 s each, and the
 *    16 GiB save should cost about the same as the 4 GiB one), store growth vs unique bytes
 *    (target ≤ 1.05×), a second save with no changes (target: 0 new chunks), and the first save
 *    from a cold base (which ingests the base once).
 * 4. Peak RSS of `shuru nbd serve` while `qemu-img bench` writes GiB through it (the overlay is
 *    on disk, so RSS should not grow with the data written).
 *
 * Run: `deno run -A bench/store_bench.ts [--quick] [--rss-gib 2] [--only hash,blocks,saves,rss]`
 *
 * @module
 */

import { createBLAKE3 } from "hash-wasm";
import { Store } from "../store/mod.ts";

const QUICK = Deno.args.includes("--quick");
const RSS_GIB = Number(argValue("--rss-gib") ?? (QUICK ? "1" : "2"));
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function argValue(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

function fill(buf: Uint8Array<ArrayBuffer>, seed: number): Uint8Array<ArrayBuffer> {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  let x = (seed * 2 + 1) >>> 0;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return buf;
}

function mbps(bytes: number, ms: number): string {
  return `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`;
}

async function dirBytes(path: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(path)) {
    const p = `${path}/${e.name}`;
    if (e.isDirectory) total += await dirBytes(p);
    else if (e.isFile) total += (await Deno.lstat(p)).size;
  }
  return total;
}

async function storeBytes(dir: string): Promise<number> {
  return await dirBytes(`${dir}/chunks`) + await dirBytes(`${dir}/checkpoints`);
}

async function hashBench(): Promise<void> {
  console.log("## 1. Hash throughput, 64 KiB blocks (256 MiB each)");
  const block = fill(new Uint8Array(64 * KiB), 1);
  const n = QUICK ? 1024 : 4096;
  const h = await createBLAKE3(256);
  for (let i = 0; i < 64; i++) h.init().update(block).digest("binary"); // warm up
  let t = performance.now();
  for (let i = 0; i < n; i++) h.init().update(block).digest("binary");
  const blake = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < n; i++) await crypto.subtle.digest("SHA-256", block);
  const sha = performance.now() - t;
  t = performance.now();
  const pending: Promise<ArrayBuffer>[] = [];
  for (let i = 0; i < n; i++) pending.push(crypto.subtle.digest("SHA-256", block));
  await Promise.all(pending);
  const shaPar = performance.now() - t;
  const bytes = n * block.length;
  console.log(`BLAKE3-256 (hash-wasm, sync):        ${mbps(bytes, blake)}`);
  console.log(`SHA-256 (WebCrypto, one at a time):  ${mbps(bytes, sha)}`);
  console.log(`SHA-256 (WebCrypto, all in flight):  ${mbps(bytes, shaPar)}`);
  console.log(`ratio BLAKE3 / SHA-256 (sequential): ${(sha / blake).toFixed(2)}x`);
}

/** A base image: pseudo-random data with zero gaps, like a file system image. */
async function makeBase(path: string, size: number): Promise<void> {
  const buf = fill(new Uint8Array(size), 7);
  for (let off = 0; off < size; off += 4 * MiB) buf.fill(0, off + 3 * MiB, off + 4 * MiB);
  await Deno.writeFile(path, buf);
}

/** Writes a guest-like pattern; returns the bytes of distinct 4 KiB pages it changed. */
async function guestPattern(
  dev: { write(o: number, d: Uint8Array): Promise<void> },
  seed: number,
): Promise<number> {
  let x = seed * 7919 + 1;
  const rand = () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
  const pages = new Set<number>();
  const region = 1 * GiB;
  // Files: 200 files of 4 KiB..2 MiB (log-uniform), each at a random 4 KiB-aligned offset.
  for (let f = 0; f < 200; f++) {
    const size = Math.round(4 * KiB * Math.pow(512, rand()) / 4096) * 4096;
    const off = Math.floor(rand() * (region - size) / 4096) * 4096;
    await dev.write(off, fill(new Uint8Array(size), seed * 1000 + f));
    for (let p = off / 4096; p < (off + size) / 4096; p++) pages.add(p);
  }
  // Metadata and journal: 3000 scattered 4 KiB writes.
  for (let m = 0; m < 3000; m++) {
    const off = Math.floor(rand() * region / 4096) * 4096;
    await dev.write(off, fill(new Uint8Array(4096), seed * 100000 + m));
    pages.add(off / 4096);
  }
  return pages.size * 4096;
}

async function blockSizeBench(tmp: string): Promise<void> {
  console.log("\n## 2. Block size (4 GiB device over a 64 MiB base; guest-like writes)");
  console.log(
    "block    BLAKE3      first save (ingest)  save after writes  growth/changed  manifest",
  );
  const sizes = QUICK ? [4 * KiB, 64 * KiB, 1 * MiB] : [
    4 * KiB,
    16 * KiB,
    64 * KiB,
    256 * KiB,
    1 * MiB,
  ];
  const base = `${tmp}/bs-base.img`;
  await makeBase(base, 64 * MiB);
  const h = await createBLAKE3(256);
  for (const bs of sizes) {
    const block = fill(new Uint8Array(bs), 3);
    const n = Math.max(16, (64 * MiB) / bs);
    let t = performance.now();
    for (let i = 0; i < n; i++) h.init().update(block).digest("binary");
    const hashRate = mbps(n * bs, performance.now() - t);
    const dir = `${tmp}/bs-${bs}`;
    const store = await Store.open(`${dir}/store`, { blockSize: bs });
    const dev = await store.openDevice({ base }, { overlayDir: `${dir}/inst`, size: 4 * GiB });
    const first = await dev.save("ingest");
    const before = await storeBytes(store.dir);
    const changed = await guestPattern(dev, 1);
    t = performance.now();
    const r = await dev.save("after");
    const saveMs = performance.now() - t;
    const growth = (await storeBytes(store.dir)) - before;
    await dev.close();
    console.log(
      `${(bs / KiB).toString().padStart(4)} KiB ${hashRate.padStart(10)}  ${
        `${first.elapsedMs.toFixed(0)} ms`.padStart(19)
      }  ${`${saveMs.toFixed(0)} ms`.padStart(17)}  ${
        `${(growth / changed).toFixed(2)}x`.padStart(14)
      }  ${(r.manifestBytes / KiB).toFixed(0)} KiB`,
    );
    await Deno.remove(dir, { recursive: true });
  }
}

async function saveBench(tmp: string): Promise<void> {
  console.log("\n## 3. Saves (64 KiB blocks)");
  const base = `${tmp}/base.img`;
  await makeBase(base, 256 * MiB);
  const store = await Store.open(`${tmp}/store`);
  // The first save from a cold base ingests it once (hashes its non-zero blocks).
  let dev = await store.openDevice({ base }, { overlayDir: `${tmp}/i0`, size: 4 * GiB });
  const cold = await dev.save("cold");
  await dev.close();
  console.log(
    `first save from a cold 256 MiB base: ${cold.elapsedMs.toFixed(0)} ms ` +
      `(${cold.hashedBlocks} blocks hashed, ${cold.newChunks} chunks written; hash ` +
      `${cold.phases.hashMs.toFixed(0)}, write ${cold.phases.writeMs.toFixed(0)}, sync ` +
      `${cold.phases.syncMs.toFixed(0)} ms)`,
  );
  const data = fill(new Uint8Array(64 * MiB), 42);
  const times: number[] = [];
  for (const [label, size] of [["4 GiB", 4 * GiB], ["16 GiB", 16 * GiB]] as const) {
    for (const from of ["base", "checkpoint"] as const) {
      dev = await store.openDevice(from === "base" ? { base } : { checkpoint: "cold" }, {
        overlayDir: `${tmp}/i-${label}-${from}`,
        size,
      });
      // A different 64 MiB each time, so every block is new to the store.
      data[0] = times.length + 1;
      for (let b = 0; b < 1024; b++) data[b * 64 * KiB + 1] = times.length + 1;
      await dev.write(1 * GiB, data);
      const before = await storeBytes(store.dir);
      const r = await dev.save(`w-${label.replace(" ", "")}-${from}`);
      const growth = (await storeBytes(store.dir)) - before;
      times.push(r.elapsedMs);
      const again = await dev.save(`w-${label.replace(" ", "")}-${from}-again`);
      await dev.close();
      console.log(
        `save after 64 MiB on a ${label.padEnd(6)} device from ${from.padEnd(10)}: ${
          r.elapsedMs.toFixed(0).padStart(4)
        } ms (target < 1000), growth ${(growth / MiB).toFixed(2)} MiB = ${
          (growth / (64 * MiB)).toFixed(3)
        }x unique (target ≤ 1.05), manifest ${(r.manifestBytes / KiB).toFixed(0)} KiB ` +
          `[hash ${r.phases.hashMs.toFixed(0)}, write ${r.phases.writeMs.toFixed(0)}, ` +
          `sync ${r.phases.syncMs.toFixed(0)}, manifest ${r.phases.manifestMs.toFixed(0)} ms]; ` +
          `unchanged re-save: ${again.newChunks} new chunks, ${again.elapsedMs.toFixed(0)} ms`,
      );
    }
  }
  console.log(
    `ratio 16 GiB / 4 GiB save time (from base): ${(times[2]! / times[0]!).toFixed(2)}x, ` +
      `(from checkpoint): ${(times[3]! / times[1]!).toFixed(2)}x (cost follows dirty data)`,
  );
}

async function rssBench(tmp: string): Promise<void> {
  console.log(`\n## 4. Peak RSS of shuru nbd serve while writing ${RSS_GIB} GiB`);
  const root = new URL("..", import.meta.url).pathname;
  const sock = `${tmp}/rss.sock`;
  const base = `${tmp}/rss-base.img`;
  await makeBase(base, 16 * MiB);
  const child = new Deno.Command(`${root}node_modules/.bin/deno`, {
    args: [
      "run",
      "-A",
      "--quiet",
      `${root}main.ts`,
      "nbd",
      "serve",
      "--socket",
      sock,
      "--base",
      base,
      "--size",
      `${RSS_GIB + 1}G`,
    ],
    env: { SHURU_HOME: `${tmp}/rss-home` },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 300; i++) {
      try {
        (await Deno.connect({ transport: "unix", path: sock })).close();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const status = async (field: string) => {
      const text = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)![1]) * KiB;
    };
    const idle = await status("VmRSS");
    const t = performance.now();
    const out = await new Deno.Command("qemu-img", {
      args: [
        "bench",
        "-w",
        "-f",
        "raw",
        "-t",
        "none",
        "-s",
        "4M",
        "-c",
        String(RSS_GIB * 256),
        "-d",
        "8",
        "--pattern=90",
        `nbd+unix:///?socket=${sock}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    const ms = performance.now() - t;
    const peak = await status("VmHWM");
    console.log(
      `idle RSS ${(idle / MiB).toFixed(0)} MiB, peak RSS ${(peak / MiB).toFixed(0)} MiB after ` +
        `writing ${RSS_GIB} GiB (${mbps(RSS_GIB * GiB, ms)}); peak growth / bytes written = ${
          ((peak - idle) / (RSS_GIB * GiB)).toFixed(3)
        }x (an in-RAM overlay would be ≥ 1.0x)`,
    );
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

if (import.meta.main) {
  const tmp = await Deno.makeTempDir({ prefix: "shuru-store-bench-" });
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => {
      Deno.removeSync(tmp, { recursive: true });
      Deno.exit(130);
    });
  }
  try {
    const only = argValue("--only")?.split(",");
    const want = (name: string) => only === undefined || only.includes(name);
    if (want("hash")) await hashBench();
    if (want("blocks")) await blockSizeBench(tmp);
    if (want("saves")) await saveBench(tmp);
    if (want("rss")) await rssBench(tmp);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  Deno.exit(0);
}
