/**
 * Checkpoints as OCI artifacts through the store API, against real registries: push, skopeo
 * inspect and copy, pull byte for byte, dedup on a second push, resume of an interrupted push,
 * lazy reads, and every kind of bad input a registry can hand back.
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { FaultyFront, skopeo, TestRegistry } from "./_registry.ts";
import {
  openRemoteCheckpoint,
  pullCheckpoint,
  pushCheckpoint,
  Store,
  StoreError,
} from "../store/mod.ts";
import { MEDIA_OCI_MANIFEST, RegistryClient, RegistryError, sha256Digest } from "../oci/mod.ts";

const BS = 65536;
const MiB = 1024 * 1024;
const FAST = { retry: { attempts: 2, baseMs: 10, maxMs: 50, maxRetryAfterMs: 50 } };

function pseudoRandom(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

/** A temp folder with a store holding checkpoint `name` made from a synthetic disk. */
class World implements AsyncDisposable {
  readonly dir: string;
  readonly store: Store;
  private constructor(dir: string, store: Store) {
    this.dir = dir;
    this.store = store;
  }
  static async create(): Promise<World> {
    const dir = await Deno.makeTempDir({ prefix: "shuru-remote-" });
    return new World(dir, await Store.open(join(dir, "store"), { log: () => {} }));
  }
  /** A second, empty store (another machine). */
  async other(name: string): Promise<Store> {
    return await Store.open(join(this.dir, name), { log: () => {} });
  }
  /**
   * Saves checkpoint `name`: an 8 MiB disk of text-like (compressible), random and zero
   * blocks, plus duplicated blocks; then `writes` over it.
   */
  async checkpoint(
    name: string,
    writes: { offset: number; data: Uint8Array }[] = [],
    from?: string,
  ): Promise<Uint8Array> {
    const overlayDir = join(this.dir, `ov-${name}`);
    let device;
    if (from) {
      device = await this.store.openDevice({ checkpoint: from }, { overlayDir });
    } else {
      const base = join(this.dir, "base.img");
      const disk = pseudoRandom(8 * MiB, 5);
      const text = new TextEncoder().encode("shuru checkpoint ".repeat(BS / 16));
      for (let b = 0; b < 32; b++) disk.set(text.subarray(0, BS), b * BS);
      disk.fill(0, 40 * BS, 48 * BS);
      disk.copyWithin(60 * BS, 50 * BS, 51 * BS);
      await Deno.writeFile(base, disk);
      device = await this.store.openDevice({ base }, { overlayDir });
    }
    try {
      for (const w of writes) await device.write(w.offset, w.data);
      await device.save(name);
      return await device.read(0, device.size);
    } finally {
      await device.close();
    }
  }
  async read(store: Store, name: string): Promise<Uint8Array> {
    const device = await store.openDevice({ checkpoint: name }, {
      overlayDir: join(this.dir, `rd-${crypto.randomUUID()}`),
      readOnly: true,
    });
    try {
      return await device.read(0, device.size);
    } finally {
      await device.close();
    }
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

async function dockerConfig(dir: string, host: string, user: string, pw: string) {
  const path = join(dir, "docker-config.json");
  const auth = new TextEncoder().encode(`${user}:${pw}`).toBase64();
  await Deno.writeTextFile(path, JSON.stringify({ auths: { [host]: { auth } } }));
  return path;
}

Deno.test("push and pull - skopeo inspects and copies it; pulled bytes are the saved bytes", async () => {
  await using world = await World.create();
  await using a = await TestRegistry.start({
    auth: { kind: "htpasswd", users: [{ name: "alice", password: "pw" }] },
  });
  await using b = await TestRegistry.start({
    auth: { kind: "token", users: [{ name: "bob", password: "pw2" }] },
  });
  const disk = await world.checkpoint("env");
  const cfgA = await dockerConfig(world.dir, a.host, "alice", "pw");
  const pushed = await pushCheckpoint(world.store, "env", a.ref("team/env:v1"), {
    dockerConfig: cfgA,
  });
  // 120 non-zero blocks: 32 identical text blocks and one duplicate make 88 distinct chunks.
  assertEquals([pushed.chunks, pushed.reusedChunks, pushed.newChunks], [88, 0, 88]);
  // Compression: 32 text blocks shrink, random ones are stored raw.
  assert(pushed.bytesSent < pushed.newChunkBytes, JSON.stringify(pushed));

  // An independent client reads and copies it.
  const creds = ["--creds", "alice:pw", "--tls-verify=false"];
  const raw = await skopeo(["inspect", "--raw", ...creds, `docker://${a.ref("team/env:v1")}`]);
  assertEquals(raw.code, 0, raw.stderr);
  const manifest = JSON.parse(raw.stdout);
  assertEquals(manifest.artifactType, "application/vnd.shuru.checkpoint.v1");
  assertEquals(await sha256Digest(new TextEncoder().encode(raw.stdout)), pushed.digest);
  const cfg = await skopeo([
    "inspect",
    "--config",
    "--raw",
    ...creds,
    `docker://${a.ref("team/env:v1")}`,
  ]);
  assertEquals(JSON.parse(cfg.stdout).blockSize, BS);
  const copy = await skopeo([
    "copy",
    "--src-creds",
    "alice:pw",
    "--dest-creds",
    "bob:pw2",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    `docker://${a.ref("team/env:v1")}`,
    `docker://${b.ref("copied/env:v2")}`,
  ]);
  assertEquals(copy.code, 0, copy.stderr);

  // Pull the copy from the token registry into another store.
  const other = await world.other("store2");
  const cfgB = await dockerConfig(world.dir, b.host, "bob", "pw2");
  const pulled = await pullCheckpoint(other, b.ref("copied/env:v2"), { dockerConfig: cfgB });
  assertEquals(pulled.name, "env");
  assertEquals(pulled.digest, pushed.digest);
  assertEquals(pulled.fetchedChunks, pushed.newChunks);
  assertEquals(await world.read(other, "env"), disk);
  const [info] = await other.list();
  assertEquals(info?.origin, { ref: b.ref("copied/env:v2"), digest: pushed.digest });
  // A second pull fetches nothing.
  const again = await pullCheckpoint(other, b.ref("copied/env:v2"), {
    dockerConfig: cfgB,
    name: "env2",
  });
  assertEquals(again.fetchedChunks, 0);
  // Pulling over an existing name is refused before fetching anything.
  const err = await assertRejects(() =>
    pullCheckpoint(other, b.ref("copied/env:v2"), { dockerConfig: cfgB })
  );
  assert(err instanceof StoreError && err.code === "exists", err.message);
});

Deno.test("push - a second push sends only the changed chunks; other repositories mount", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  await world.checkpoint("base");
  await pushCheckpoint(world.store, "base", reg.ref("x/env:1"));
  // 1 MiB of new random data over the checkpoint.
  const change = pseudoRandom(MiB, 99);
  await world.checkpoint("next", [{ offset: 2 * MiB, data: change }], "base");
  const second = await pushCheckpoint(world.store, "next", reg.ref("x/env:2"), {
    compress: false,
  });
  assertEquals(second.newChunks, MiB / BS);
  assertEquals(second.reusedChunks, second.chunks - second.newChunks);
  const blobOverhead = second.bytesSent - MiB;
  assert(blobOverhead >= 0 && blobOverhead < 64 * 1024, JSON.stringify(second));
  // Pulling "next" elsewhere, then pushing it to another repository of the same registry:
  // its packs are mounted from where it came from, not sent.
  const other = await world.other("store2");
  await pullCheckpoint(other, reg.ref("x/env:2"), { name: "next" });
  const third = await pushCheckpoint(other, "next", reg.ref("y/copy:1"));
  assertEquals(third.newChunks, 0);
  assert(third.mountedPacks > 0, JSON.stringify(third));
  assert(third.bytesSent < 64 * 1024, JSON.stringify(third));
});

Deno.test("push - an interrupted push resumes without sending uploaded packs again", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  await world.checkpoint("env");
  const opts = { ...FAST, packBytes: 1 * MiB, compress: false };
  // The fourth blob upload is refused: the push stops after some packs went up.
  let uploads = 0;
  front.rules = [{
    match: (r) => r.method === "PUT" && r.path.includes("/blobs/uploads/") && ++uploads === 4,
    action: { kind: "status", status: 400 },
  }];
  const err = await assertRejects(() =>
    pushCheckpoint(world.store, "env", `${front.host}/r:1`, opts)
  );
  assert(err instanceof RegistryError, String(err));
  front.rules = [];
  const resumed = await pushCheckpoint(world.store, "env", `${front.host}/r:1`, opts);
  // Three packs (four when the one in flight beside the refused upload finished) went up
  // before the failure: the re-run finds them with HEAD and sends only the rest.
  assert(resumed.resumedPacks >= 3, JSON.stringify(resumed));
  const packBytes = (n: number) => n * 16 * BS; // 1 MiB packs of raw chunks
  assert(
    resumed.bytesSent <= resumed.newChunkBytes - packBytes(resumed.resumedPacks) + 64 * 1024,
    JSON.stringify(resumed),
  );
  const pulled = await pullCheckpoint(await world.other("s2"), reg.ref("r:1"));
  assertEquals(pulled.chunks, resumed.chunks);
});

Deno.test("lazy reads - fetched on first read, verified, kept locally; second open is local", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  const disk = await world.checkpoint("env");
  const pushed = await pushCheckpoint(world.store, "env", reg.ref("lazy/env:1"));
  const other = await world.other("s2");
  const ref = `${front.host}/lazy/env:1`;
  const opened = await openRemoteCheckpoint(other, ref, { ...FAST, readahead: 4 });
  assertEquals(opened.remote.digest, pushed.digest);
  const device = await other.openDevice(opened.source, { overlayDir: join(world.dir, "lz1") });
  try {
    front.resetCounters();
    assertEquals(await device.read(3 * MiB, 100_000), disk.subarray(3 * MiB, 3 * MiB + 100_000));
    // One request covers the two blocks asked for plus readahead.
    assertEquals(opened.chunks.stats.requests, 1);
    assertEquals(opened.chunks.stats.fetchedChunks, 5);
    assert(front.blobBytes <= 5 * BS && front.blobBytes > 0, String(front.blobBytes));
    assertEquals(await device.read(0, device.size), disk);
    assert(opened.chunks.stats.fetchedBytes < disk.length);
  } finally {
    await device.close();
  }
  // Second open: everything is local, the registry serves no blob.
  front.resetCounters();
  const again = await openRemoteCheckpoint(other, ref, FAST);
  const d2 = await other.openDevice(again.source, { overlayDir: join(world.dir, "lz2") });
  try {
    assertEquals(await d2.read(0, d2.size), disk);
    assertEquals(again.chunks.stats.fetchedChunks, 0);
    assertEquals(front.requests.filter((r) => r.includes("/blobs/")).length, 0);
  } finally {
    await d2.close();
  }
  // The fetched chunks survive a gc (the pinned .idx is a root).
  const gc = await other.gc();
  assertEquals(gc.removedChunks, 0);
});

Deno.test("lazy reads - a save over a lazily read checkpoint fetches what it references", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  const disk = await world.checkpoint("env");
  await pushCheckpoint(world.store, "env", reg.ref("save/env:1"));
  const other = await world.other("s2");
  const opened = await openRemoteCheckpoint(other, reg.ref("save/env:1"), FAST);
  const device = await other.openDevice(opened.source, { overlayDir: join(world.dir, "sv") });
  const patch = pseudoRandom(BS, 42);
  try {
    await device.write(5 * BS, patch);
    assertEquals(opened.chunks.stats.fetchedChunks, 0);
    await device.save("mine");
  } finally {
    await device.close();
  }
  assert(opened.chunks.stats.fetchedChunks > 80, JSON.stringify(opened.chunks.stats));
  // The registry and the pinned cache are gone: the saved checkpoint stands on its own.
  await reg.stop();
  await other.gc({ pruneBaseCache: true });
  const expected = disk.slice();
  expected.set(patch, 5 * BS);
  assertEquals(await world.read(other, "mine"), expected);
});

Deno.test("lazy reads - wrong bytes and an unreachable registry fail the read, never return data", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  const disk = await world.checkpoint("env");
  await pushCheckpoint(world.store, "env", reg.ref("bad/env:1"), { compress: false });
  const other = await world.other("s2");
  const lines: string[] = [];
  const logged = await Store.open(other.dir, { log: (l) => lines.push(l) });
  const opened = await openRemoteCheckpoint(logged, `${front.host}/bad/env:1`, {
    ...FAST,
    readahead: 0,
    log: (l) => lines.push(l),
  });
  const device = await logged.openDevice(opened.source, { overlayDir: join(world.dir, "b1") });
  try {
    const isPack = (r: { method: string; headers: Headers }) =>
      r.method === "GET" && r.headers.has("range");
    front.rules = [{ match: isPack, action: { kind: "corrupt", offset: 7 } }];
    const e1 = await assertRejects(() => device.read(64 * BS, 4096));
    assert(e1 instanceof StoreError && e1.code === "corrupt_chunk", e1.message);
    assert(lines.some((l) => l.includes("served wrong bytes")), lines.join("\n"));
    // The bad bytes were not kept: with the fault gone, the same read returns the right data.
    front.rules = [];
    assertEquals(await device.read(64 * BS, 4096), disk.subarray(64 * BS, 64 * BS + 4096));
    // A registry that lies about the size of a range.
    front.rules = [{ match: isPack, action: { kind: "size", length: 100 } }];
    const e2 = await assertRejects(() => device.read(70 * BS, 10));
    assert(e2 instanceof StoreError && e2.code === "unavailable", e2.message);
    front.rules = [];
    assertEquals(await device.read(75 * BS, 10), disk.subarray(75 * BS, 75 * BS + 10));
    // The registry goes away: after the retries the read fails (one line for the outage).
    await reg.stop();
    lines.length = 0;
    const e3 = await assertRejects(() => device.read(80 * BS, 10));
    assert(e3 instanceof StoreError && e3.code === "unavailable", e3.message);
    await assertRejects(() => device.read(90 * BS, 10));
    assertEquals(lines.length, 1, lines.join("\n"));
    assert(lines[0]!.includes("fail with an I/O error"), lines[0]);
    // Blocks read before are still served.
    assertEquals(await device.read(64 * BS, 4096), disk.subarray(64 * BS, 64 * BS + 4096));
  } finally {
    await device.close();
  }
});

Deno.test("pull - bad input: not a checkpoint, missing blob, statuses, wrong chunk bytes; nothing half-pulled is listed", async () => {
  await using world = await World.create();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  await world.checkpoint("env");
  const pushed = await pushCheckpoint(world.store, "env", reg.ref("p/env:1"), {
    compress: false,
  });
  const other = await world.other("s2");
  const pull = (ref: string) => pullCheckpoint(other, ref, { ...FAST, name: "got" });
  const expect = async (p: Promise<unknown>, code: string) => {
    const err = await assertRejects(() => p);
    assertEquals((err as StoreError | RegistryError).code, code, err.message);
    assert(err.message.startsWith("Cannot "), err.message);
    assertEquals((await other.list()).map((c) => c.name), []);
    return err;
  };
  // A container image (docker media types) is not a checkpoint.
  const client = new RegistryClient(reg.host);
  const cfg = new TextEncoder().encode('{"architecture":"amd64","os":"linux"}');
  const cfgDigest = await sha256Digest(cfg);
  await client.uploadBlob("img", cfgDigest, cfg);
  await client.putManifest(
    "img",
    "1",
    new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_OCI_MANIFEST,
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: cfgDigest,
        size: cfg.length,
      },
      layers: [],
    })),
    MEDIA_OCI_MANIFEST,
  );
  const e1 = await expect(pull(reg.ref("img:1")), "not_checkpoint");
  assert(e1.message.includes("container image"), e1.message);
  await expect(pull(reg.ref("p/env:nope")), "not_found");
  for (
    const [status, code] of [[401, "unauthorized"], [403, "denied"], [404, "not_found"], [
      429,
      "rate_limited",
    ], [503, "server_error"]] as const
  ) {
    front.rules = [{
      match: (r) => r.path.includes("/blobs/"),
      action: { kind: "status", status },
    }];
    await expect(pull(`${front.host}/p/env:1`), code);
  }
  const isRange = (r: { headers: Headers }) => r.headers.has("range");
  front.rules = [{ match: isRange, action: { kind: "corrupt", offset: 9 } }];
  const e2 = await expect(pull(`${front.host}/p/env:1`), "corrupt_chunk");
  assert(e2.message.includes("served wrong bytes"), e2.message);
  front.rules = [{ match: isRange, action: { kind: "size", length: 7 } }];
  await expect(pull(`${front.host}/p/env:1`), "size_mismatch");
  front.rules = [];
  const m = JSON.parse(new TextDecoder().decode((await client.getManifest("p/env", "1")).bytes));
  // A config that names another architecture than the .idx it comes with.
  const config = JSON.parse(
    new TextDecoder().decode(await client.getBlob("p/env", m.config.digest, m.config.size)),
  );
  assertEquals(config.arch, "x86_64");
  const lie = new TextEncoder().encode(JSON.stringify({ ...config, arch: "arm64" }));
  const lieDigest = await sha256Digest(lie);
  await client.uploadBlob("p/env", lieDigest, lie);
  const lying = { ...m, config: { ...m.config, digest: lieDigest, size: lie.length } };
  await client.putManifest(
    "p/env",
    "lie",
    new TextEncoder().encode(JSON.stringify(lying)),
    MEDIA_OCI_MANIFEST,
  );
  const e3 = await expect(pull(reg.ref("p/env:lie")), "bad_manifest");
  assert(e3.message.includes("config says arm64, its .idx x86_64"), e3.message);
  // A pack deleted from the registry: the pull fails at that blob.
  const pack = m.layers.find((l: { mediaType: string }) => l.mediaType.endsWith("pack.v1"));
  const del = await fetch(`http://${reg.host}/v2/p/env/blobs/${pack.digest}`, {
    method: "DELETE",
  });
  await del.body?.cancel();
  assertEquals(del.status, 202);
  await expect(pull(reg.ref(`p/env@${pushed.digest}`)), "not_found");
});
