/**
 * Memory snapshots on shuru's real guest (2 vCPUs, 2 GiB, NBD root disk from our server, agent
 * on virtio-serial), every figure against a cold boot measured in the same run, alternated:
 *
 * - cold: boot to a ready agent (HELLO answered) and the first `true` done, RAM anonymous.
 * - chosen ("devices + RAM file"): machine state saved without RAM
 *   (`xen-save-devices-state`), RAM image in the store, restored by mapping the verified RAM
 *   file private and loading the state; then `set_identity` and `true`.
 * - x-ignore-shared (FINDINGS' recipe): the migration stream of a VM whose RAM is a shared
 *   file, restored over the same RAM file mapped private.
 * - plain migration: the full migration stream (every page), restored into anonymous RAM.
 *
 * Then, on a restored guest holding about 300 MiB of fresh data: a memory checkpoint while it
 * keeps running (the pause and the total), and a second one a minute later (bytes added, chunks
 * shared with the first).
 *
 * Usage: deno run -A bench/snapshot_bench.ts [rounds]   (TCG here; default 3 rounds)
 *
 * @module
 */

import { join } from "node:path";
import { type Guest, SnapshotLab } from "../tests/_snapshot_guest.ts";
import {
  captureChangedRam,
  loadMachineState,
  MIGRATION_CAPABILITIES,
  type QemuVm,
} from "../vm/mod.ts";
import type { BlockTable } from "../store/mod.ts";
import { median } from "./_stats.ts";

const ROUNDS = Number(Deno.args[0] ?? 3);
const BLOCK = 64 * 1024;

function p(xs: number[]): string {
  const r = (x: number) => Math.round(x);
  return `median ${r(median(xs))} (min ${r(Math.min(...xs))}, max ${r(Math.max(...xs))})`;
}

function ratio(xs: number[], refs: number[]): string {
  return median(xs.map((x, i) => x / refs[i]!)).toFixed(3);
}

async function rssKiB(pid: number): Promise<{ rss: number; anon: number; file: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: get("VmRSS"), anon: get("RssAnon"), file: get("RssFile") };
}

async function exec(g: Guest, script: string): Promise<string> {
  const r = await g.sandbox.exec(["sh", "-c", script]);
  if (r.exitCode !== 0) throw new Error(`${script}: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout);
}

async function migrateTo(vm: QemuVm, file: string, ignoreShared: boolean) {
  const qmp = vm.qmp!;
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [
      { capability: "x-ignore-shared", state: ignoreShared },
      { capability: "events", state: true },
    ],
  });
  const done = qmp.waitForEvent("MIGRATION", {
    match: (d) => ["completed", "failed"].includes(String(d.status)),
    signal: AbortSignal.timeout(600_000),
  });
  done.catch(() => {});
  const t0 = performance.now();
  await qmp.execute("migrate", { uri: `exec:cat > ${file}` });
  const ev = await done;
  if (ev.data.status !== "completed") throw new Error(`migration to ${file} failed`);
  // `cat` may still be writing when QEMU reports completion: the size is read at the end.
  return { ms: performance.now() - t0, bytes: 0 };
}

interface Sample {
  /** QEMU started → VM paused with the state loaded (restores only). */
  loaded?: number;
  /** QEMU started → agent HELLO answered. */
  hello: number;
  /** QEMU started → set_identity done (the chosen path). */
  identity?: number;
  /** QEMU started → first `true` done. */
  exec: number;
  /** The first `true` alone. */
  firstExec: number;
  rss: { rss: number; anon: number; file: number };
}

async function finish(g: Guest, t0: number, s: Partial<Sample>, identity: boolean) {
  await g.connect();
  s.hello = performance.now() - t0;
  if (identity) {
    await g.sandbox.setIdentity({ hostname: "bench", machineId: "a".repeat(32) });
    s.identity = performance.now() - t0;
  }
  const te = performance.now();
  await g.sandbox.exec(["true"]);
  s.firstExec = performance.now() - te;
  s.exec = performance.now() - t0;
  s.rss = await rssKiB(g.vm.pid);
  return s as Sample;
}

await using lab = await SnapshotLab.create({ cpus: 2, memoryMiB: 2048 });
const size = lab.memoryMiB * 1024 * 1024;
const ram0 = join(lab.dir, "ram0");
const files = {
  devices: join(lab.dir, "devices.state"),
  ignoreShared: join(lab.dir, "ignore-shared.stream"),
  full: join(lab.dir, "full.stream"),
};
const saves: Record<string, { ms: number; bytes: number }> = {};
let storeSave = { ms: 0, usedBlocks: 0, detail: "" };
console.log(
  `memory snapshots under TCG: ${lab.cpus} vCPUs, ${lab.memoryMiB} MiB, ${ROUNDS} rounds`,
);
// The first disk save ingests the base image; do that now so the saves below time the memory.
await lab.store.prepareBase(lab.assets.rootfs);
{
  const t0 = performance.now();
  await using g = await lab.boot({ ramFile: ram0 });
  await g.connect();
  await g.sandbox.exec(["true"]);
  console.log(
    `  preparing: cold boot with RAM in a shared file, ready in ${
      Math.round(performance.now() - t0)
    } ms`,
  );
  await g.detach();
  await g.vm.pause();
  const disk = await g.device.snapshot();
  const saved = await g.vm.saveState(files.devices);
  saves.devices = { ms: saved.elapsedMs, bytes: saved.stateBytes };
  const ts = performance.now();
  const r = await disk.save("ready", {
    memory: {
      source: { size, file: ram0 },
      state: await Deno.readFile(files.devices),
      machine: { ...g.vm.describe() },
    },
  });
  const ph = r.phases;
  storeSave = {
    ms: performance.now() - ts,
    usedBlocks: r.memory!.usedBlocks,
    detail: `disk ${r.hashedBlocks} blocks hashed; RAM ${r.memory!.hashedBlocks} hashed, ` +
      `${r.memory!.newChunks} new chunks; hash ${ph.hashMs.toFixed(0)} ms, write ` +
      `${ph.writeMs.toFixed(0)} ms, sync ${ph.syncMs.toFixed(0)} ms`,
  };
  // QEMU allows one migration per paused VM: the plain stream needs a second source.
  saves.ignoreShared = await migrateTo(g.vm as QemuVm, files.ignoreShared, true);
}
{
  await using g = await lab.boot({});
  await g.connect();
  await g.sandbox.exec(["true"]);
  await g.detach();
  await g.vm.pause();
  await g.device.save("ready-full");
  saves.full = await migrateTo(g.vm as QemuVm, files.full, false);
}
const image = await lab.store.readMemory("ready");
const readyTable = image.table;
const tm = performance.now();
const ready = await lab.store.materializeMemory(image);
const materializeMs = performance.now() - tm;

const samples: Record<"cold" | "devices" | "ignoreShared" | "full", Sample[]> = {
  cold: [],
  devices: [],
  ignoreShared: [],
  full: [],
};
const disk = { disk: { checkpoint: "ready" } };
for (let round = 0; round < ROUNDS; round++) {
  {
    const t0 = performance.now();
    await using g = await lab.boot({});
    samples.cold.push(await finish(g, t0, {}, false));
  }
  {
    const t0 = performance.now();
    await using g = await lab.restore({ ramFile: ready.path, stateFile: files.devices }, disk);
    const s: Partial<Sample> = { loaded: performance.now() - t0 };
    await g.vm.resume();
    samples.devices.push(await finish(g, t0, s, true));
  }
  for (const kind of ["ignoreShared", "full"] as const) {
    const t0 = performance.now();
    await using g = await lab.incoming(
      kind === "full" ? { disk: { checkpoint: "ready-full" } } : { ...disk, ramFile: ram0 },
    );
    const caps = kind === "full"
      ? MIGRATION_CAPABILITIES
      : [...MIGRATION_CAPABILITIES, { capability: "x-ignore-shared", state: true }];
    await loadMachineState(g.vm.qmp!, files[kind], {
      socketPath: join(g.instance.dir, "mig.sock"),
      signal: AbortSignal.timeout(600_000),
      exited: g.vm.exited,
      capabilities: caps,
    });
    const s: Partial<Sample> = { loaded: performance.now() - t0 };
    await g.vm.resume();
    samples[kind].push(await finish(g, t0, s, false));
  }
}

const cold = samples.cold;
const col = (xs: Sample[], k: keyof Sample) => xs.map((s) => s[k] as number);
console.log(`\n  cold boot (reference): agent ready ${p(col(cold, "hello"))} ms after QEMU start,`);
console.log(
  `    first true done ${p(col(cold, "exec"))} ms; that true alone ${p(col(cold, "firstExec"))} ms`,
);
const names = {
  devices: "devices state + RAM file mapped private (chosen)",
  ignoreShared: "x-ignore-shared migration stream + RAM file",
  full: "plain migration stream, anonymous RAM",
};
for (const kind of ["devices", "ignoreShared", "full"] as const) {
  const xs = samples[kind];
  console.log(`  ${names[kind]}:`);
  console.log(
    `    state loaded ${p(col(xs, "loaded"))} ms; agent ready ${p(col(xs, "hello"))} ms` +
      (kind === "devices" ? `; identity set ${p(col(xs, "identity"))} ms` : ""),
  );
  console.log(
    `    first true done ${p(col(xs, "exec"))} ms; that true alone ${p(col(xs, "firstExec"))} ms`,
  );
  console.log(`    ratio agent ready / cold: ${ratio(col(xs, "hello"), col(cold, "hello"))}`);
  console.log(`    ratio first true done / cold: ${ratio(col(xs, "exec"), col(cold, "exec"))}`);
  console.log(
    `    ratio first true alone / cold's: ${ratio(col(xs, "firstExec"), col(cold, "firstExec"))}`,
  );
  console.log(
    `    QEMU RSS after it: ${p(xs.map((s) => s.rss.rss / 1024))} MiB ` +
      `(anon ${p(xs.map((s) => s.rss.anon / 1024))}, file ${p(xs.map((s) => s.rss.file / 1024))})`,
  );
}
console.log(`    cold QEMU RSS: ${p(cold.map((s) => s.rss.rss / 1024))} MiB`);
const mib = (b: number) => (b / 1048576).toFixed(1);
saves.ignoreShared!.bytes = (await Deno.stat(files.ignoreShared)).size;
saves.full!.bytes = (await Deno.stat(files.full)).size;
console.log(`\n  saves of the ready guest (paused):`);
console.log(`    devices state: ${saves.devices!.ms.toFixed(0)} ms, ${saves.devices!.bytes} bytes`);
console.log(
  `    disk + RAM image into the store: ${
    storeSave.ms.toFixed(0)
  } ms, ${storeSave.usedBlocks} blocks ` +
    `(${mib(storeSave.usedBlocks * BLOCK)} MiB) of ${size / BLOCK}`,
);
console.log(`      (${storeSave.detail})`);
console.log(
  `    x-ignore-shared stream: ${saves.ignoreShared!.ms.toFixed(0)} ms, ${
    saves.ignoreShared!.bytes
  } bytes`,
);
console.log(
  `    plain migration stream: ${saves.full!.ms.toFixed(0)} ms, ${mib(saves.full!.bytes)} MiB`,
);
console.log(
  `    RAM file materialized from the store (every chunk verified): ${materializeMs.toFixed(0)} ms`,
);

// A restored guest with ~300 MiB in use, saved while it keeps running, twice a minute apart.
{
  await using g = await lab.restore({ ramFile: ready.path, stateFile: files.devices }, disk);
  await g.vm.resume();
  await g.connect();
  await g.sandbox.setIdentity({ hostname: "live", machineId: "b".repeat(32) });
  await exec(
    g,
    'setsid python3 -c \'import os,time; d=os.urandom(300<<20); open("/dev/shm/up","w").close(); time.sleep(3600)\' ' +
      ">/dev/null 2>&1 & while [ ! -e /dev/shm/up ]; do sleep 0.5; done",
  );
  const used = await exec(g, "free -m | awk '/Mem:/ {print $3}'");
  const live: {
    pause: number;
    total: number;
    copied: number;
    hashed: number;
    newChunks: number;
    used: number;
    syncMs: number;
  }[] = [];
  const tables: BlockTable[] = [];
  for (const [i, name] of ["live-1", "live-2"].entries()) {
    if (i === 1) await new Promise((r) => setTimeout(r, 60_000));
    await g.detach();
    const t0 = performance.now();
    await g.vm.pause();
    const snap = await g.device.snapshot();
    const stateFile = join(lab.dir, `${name}.state`);
    await g.vm.saveState(stateFile);
    const guestRam = await g.vm.openRam();
    let capture;
    try {
      capture = await captureChangedRam(guestRam, {
        path: join(lab.dir, `${name}.capture`),
        blockSize: BLOCK,
      });
    } finally {
      guestRam.close();
    }
    await g.vm.resume();
    const pause = performance.now() - t0;
    const r = await snap.save(name, {
      memory: {
        source: {
          size,
          file: ready.path,
          fileTable: readyTable,
          capture: { path: capture.path, blocks: capture.blocks },
        },
        state: await Deno.readFile(stateFile),
        machine: { ...g.vm.describe() },
      },
    });
    await Deno.remove(capture.path);
    live.push({
      pause,
      total: performance.now() - t0,
      copied: capture.copiedBlocks,
      hashed: r.memory!.hashedBlocks,
      newChunks: r.memory!.newChunks,
      used: r.memory!.usedBlocks,
      syncMs: r.phases.syncMs,
    });
    tables.push((await lab.store.readMemory(name)).table);
    await g.connect();
  }
  const hashes = (t: BlockTable) => {
    const out = new Set<string>();
    for (let i = 0; i < t.entryCount; i++) {
      const h = t.get(i);
      if (h) out.add(h.toHex());
    }
    return out;
  };
  const [a, b] = [hashes(tables[0]!), hashes(tables[1]!)];
  const shared = [...b].filter((h) => a.has(h)).length;
  console.log(
    `\n  memory checkpoint of a restored guest that keeps running (${used.trim()} MiB used):`,
  );
  for (const [i, l] of live.entries()) {
    console.log(
      `    save ${i + 1}: paused ${
        l.pause.toFixed(0)
      } ms (state + ${l.copied} changed blocks copied), ` +
        `total ${l.total.toFixed(0)} ms; ${l.hashed} blocks hashed, ${l.newChunks} new chunks ` +
        `(${mib(l.newChunks * BLOCK)} MiB added) of ${l.used} used; fdatasync ${
          l.syncMs.toFixed(0)
        } ms`,
    );
  }
  console.log(
    `    the second save a minute later shares ${shared} of its ${b.size} distinct chunks with the ` +
      `first (dedup ratio ${(shared / b.size).toFixed(3)}); it added ${
        mib(live[1]!.newChunks * BLOCK)
      } MiB`,
  );
}
