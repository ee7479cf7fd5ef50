/**
 * Image conversion against real images (umoci, skopeo, docker-registry), no guest boots: the
 * busybox image from an OCI layout, a `docker save` archive and a registry gives one cache
 * entry with the image's owners, modes, links, xattrs and layer deletions; it converts without
 * root; every bad input is one line and leaves nothing in the cache.
 */

import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { BUSYBOX_CONFIG, busyboxImage, run, skopeoCopy } from "./_images.ts";
import { FaultyFront, TestRegistry } from "./_registry.ts";
import { ensureImage, ImageError, registryResolver } from "../image/mod.ts";
import { e2fsckClean, ext4Cat, ext4Stat, ext4Xattrs } from "../image/_test_utils.ts";

const DISK = 256 * 1048576;

/** A scratch folder with the busybox image, built once for this file. */
let fixture: Promise<{ dir: string; ref: string }> | undefined;
function busybox(): Promise<{ dir: string; ref: string }> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "shuru-image-fixture-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    return { dir, ref: await busyboxImage(dir) };
  })();
  return fixture;
}

/** Entries under an images folder that are not the blob cache (cache folders, temp builds). */
async function cacheEntries(imagesDir: string): Promise<string[]> {
  const out: string[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(imagesDir));
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e.name === "blobs") continue;
    if (e.name === "tmp") {
      for await (const t of Deno.readDir(join(imagesDir, "tmp"))) out.push(`tmp/${t.name}`);
    } else out.push(e.name);
  }
  return out;
}

Deno.test("ensureImage - the busybox image from an OCI layout: owners, modes, links, xattrs, whiteouts, settings", async () => {
  const { ref } = await busybox();
  const imagesDir = await Deno.makeTempDir();
  try {
    const img = await ensureImage(ref, { imagesDir, diskBytes: DISK });
    assertEquals(img.cached, false);
    const fs = img.rootfs;
    await e2fsckClean(fs);
    assertEquals((await ext4Stat(fs, "/bin/busybox"))?.mode, 0o755);
    assertEquals((await ext4Stat(fs, "/bin/sh"))?.type, "symlink");
    const home = (await ext4Stat(fs, "/home/app"))!;
    assertEquals([home.mode, home.uid, home.gid], [0o700, 1000, 1000]);
    assertEquals((await ext4Stat(fs, "/hard"))?.links, 2);
    assert((await ext4Xattrs(fs, "/hard")).includes("user.shuru"));
    assertEquals(await ext4Stat(fs, "/gone"), undefined);
    assertEquals(await ext4Stat(fs, "/opaque/old"), undefined);
    assertEquals(await ext4Cat(fs, "/opaque/new"), "from layer 2\n");
    assertEquals(await ext4Cat(fs, "/layer2"), "added by layer 2\n");
    for (const p of ["/proc", "/sys", "/dev", "/run"]) {
      assertEquals((await ext4Stat(fs, p))?.type, "directory");
    }
    assertEquals((await ext4Stat(fs, "/tmp"))?.mode, 0o1777);
    assertEquals(img.defaults.env, [BUSYBOX_CONFIG.env]);
    assertEquals(img.defaults.workingDir, BUSYBOX_CONFIG.workingDir);
    assertEquals(img.defaults.command, BUSYBOX_CONFIG.cmd);
    assertEquals(img.defaults.exposedPorts, [BUSYBOX_CONFIG.exposed]);
    assertEquals(img.defaults.user, {
      spec: "app",
      uid: 1000,
      gid: 1000,
      groups: [2000],
      home: "/home/app",
    });
    // The same image again: from the cache; another disk size: converted again.
    assertEquals((await ensureImage(ref, { imagesDir, diskBytes: DISK })).cached, true);
    const bigger = await ensureImage(ref, { imagesDir, diskBytes: 2 * DISK });
    assertEquals([bigger.cached, (await Deno.stat(bigger.rootfs)).size], [false, 2 * DISK]);
  } finally {
    await Deno.remove(imagesDir, { recursive: true });
  }
});

Deno.test("ensureImage - docker-archive and registry sources give the OCI layout's cache entry; layers are pulled once", async () => {
  const { dir, ref } = await busybox();
  const imagesDir = await Deno.makeTempDir();
  try {
    const fromLayout = await ensureImage(ref, { imagesDir, diskBytes: DISK });
    const archive = join(dir, "bb.tar");
    await Deno.remove(archive).catch(() => {});
    await skopeoCopy(ref, `docker-archive:${archive}:shuru/bb:1`);
    const fromArchive = await ensureImage(`docker-archive:${archive}`, {
      imagesDir,
      diskBytes: DISK,
    });
    assertEquals(fromArchive.configDigest, fromLayout.configDigest);
    assertEquals(fromArchive.cached, true);

    await using reg = await TestRegistry.start();
    await using front = FaultyFront.start(`http://${reg.host}`);
    await skopeoCopy(ref, `docker://${reg.host}/team/bb:1`);
    const registry = registryResolver();
    const remote = `${front.host}/team/bb:1`;
    const other = await Deno.makeTempDir();
    try {
      const first = await ensureImage(remote, { imagesDir: other, diskBytes: DISK, registry });
      assertEquals([first.cached, first.configDigest], [false, fromLayout.configDigest]);
      assert(first.manifestDigest?.startsWith("sha256:"));
      const pulled = front.blobBytes;
      assert(pulled > 1_000_000, `pulled ${pulled} bytes`);
      front.resetCounters();
      // Another disk size converts again from the blob cache: only the small blobs travel.
      const again = await ensureImage(remote, { imagesDir: other, diskBytes: 2 * DISK, registry });
      assertEquals(again.cached, false);
      assert(front.blobBytes < 10_000, `pulled ${front.blobBytes} bytes again`);
    } finally {
      await Deno.remove(other, { recursive: true });
    }
  } finally {
    await Deno.remove(imagesDir, { recursive: true });
  }
});

Deno.test("ensureImage - converts without root: the files keep the image's owners", async () => {
  const { ref } = await busybox();
  const work = await Deno.makeTempDir();
  try {
    await Deno.chmod(work, 0o777);
    // The layout readable by nobody (umoci writes 0600 blobs; temp folders are 0700).
    const layout = ref.slice(4, -3);
    await run("chmod", ["-R", "a+rX", join(layout, "..")]);
    const script = join(work, "convert.ts");
    await Deno.writeTextFile(
      script,
      `import { ensureImage } from ${
        JSON.stringify(new URL("../image/mod.ts", import.meta.url).href)
      };\n` +
        `const img = await ensureImage(${JSON.stringify(ref)}, { imagesDir: ${
          JSON.stringify(join(work, "images"))
        }, diskBytes: ${DISK} });\nconsole.log(img.rootfs);\n`,
    );
    await Deno.chmod(script, 0o644);
    const out = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        Deno.execPath(),
        "run",
        "-A",
        "--no-lock",
        "--config",
        new URL("../deno.json", import.meta.url).pathname,
        script,
      ],
      env: { HOME: work, DENO_DIR: join(work, "deno"), PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert(out.success, `conversion as nobody failed: ${dec.decode(out.stderr)}`);
    const fs = dec.decode(out.stdout).trim();
    assertEquals((await Deno.stat(fs)).uid, 65534);
    await e2fsckClean(fs);
    const busyboxFile = (await ext4Stat(fs, "/bin/busybox"))!;
    assertEquals([busyboxFile.uid, busyboxFile.gid], [0, 0]);
    const home = (await ext4Stat(fs, "/home/app"))!;
    assertEquals([home.uid, home.gid, home.mode], [1000, 1000, 0o700]);
    assert((await ext4Xattrs(fs, "/hard")).includes("user.shuru"));
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

/** Copies the busybox layout and lets `edit` change it; returns `oci:<copy>:bb`. */
async function editedLayout(
  name: string,
  edit: (layout: string, manifest: Record<string, unknown>) => Promise<void>,
): Promise<{ ref: string; dir: string }> {
  const { ref } = await busybox();
  const dir = await Deno.makeTempDir({ prefix: `shuru-bad-${name}-` });
  const layout = join(dir, "layout");
  await run("cp", ["-a", ref.slice(4, -3), layout]);
  const index = JSON.parse(await Deno.readTextFile(join(layout, "index.json")));
  const manifestPath = join(layout, "blobs", "sha256", index.manifests[0].digest.slice(7));
  const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  await edit(layout, manifest);
  // Re-point the index at the (possibly changed) manifest.
  const bytes = new TextEncoder().encode(JSON.stringify(manifest));
  const digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  await Deno.writeFile(join(layout, "blobs", "sha256", digest.slice(7)), bytes);
  index.manifests[0] = { ...index.manifests[0], digest, size: bytes.length };
  await Deno.writeTextFile(join(layout, "index.json"), JSON.stringify(index));
  return { ref: `oci:${layout}:bb`, dir };
}

/** Adds the tar file `tar` gzipped as a layer on top (config diff_ids and manifest updated). */
async function addLayer(layout: string, manifest: Record<string, unknown>, tar: string) {
  const sha = async (path: string) => "sha256:" + (await run("sha256sum", [path])).split(" ")[0];
  const gz = `${tar}.gz`;
  await run("sh", ["-c", `gzip -1 -c "$0" > "$1"`, tar, gz]);
  const gzDigest = await sha(gz);
  await run("mv", [gz, join(layout, "blobs", "sha256", gzDigest.slice(7))]);
  const layers = manifest.layers as Record<string, unknown>[];
  layers.push({
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: gzDigest,
    size: (await Deno.stat(join(layout, "blobs", "sha256", gzDigest.slice(7)))).size,
  });
  const cfgDesc = manifest.config as { digest: string; size: number };
  const config = JSON.parse(
    await Deno.readTextFile(join(layout, "blobs", "sha256", cfgDesc.digest.slice(7))),
  );
  config.rootfs.diff_ids.push(await sha(tar));
  const cfgBytes = new TextEncoder().encode(JSON.stringify(config));
  const cfgDigest = "sha256:" + createHash("sha256").update(cfgBytes).digest("hex");
  await Deno.writeFile(join(layout, "blobs", "sha256", cfgDigest.slice(7)), cfgBytes);
  manifest.config = { ...cfgDesc, digest: cfgDigest, size: cfgBytes.length };
}

/**
 * A tar file (next to `layout`) holding one file of `size` zero bytes `copies` times (full
 * copies, not hard links), the first member renamed to `name` if given.
 */
async function oneFileTar(
  layout: string,
  size: number,
  copies = 1,
  name?: string,
): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: join(layout, "..") });
  await run("truncate", ["-s", String(size), join(dir, "f")]);
  const tar = join(dir, "layer.tar");
  await run("tar", [
    "-c",
    "--format=ustar",
    "--hard-dereference",
    "-f",
    tar,
    "-C",
    dir,
    ...Array(copies).fill("f"),
  ]);
  if (name !== undefined) {
    using file = await Deno.open(tar, { read: true, write: true });
    const h = new Uint8Array(512);
    await file.read(h);
    h.fill(0, 0, 100);
    h.set(new TextEncoder().encode(name), 0);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    await file.seek(0, Deno.SeekMode.Start);
    await file.write(h);
  }
  return tar;
}

Deno.test("ensureImage - bad images are one line each and leave nothing in the cache", async () => {
  const cases: [
    string,
    (l: string, m: Record<string, unknown>) => Promise<void>,
    string,
    RegExp,
  ][] = [
    [
      "unknown media type",
      (_l, m) => {
        (m.layers as { mediaType: string }[])[0]!.mediaType = "application/vnd.example.thing";
        return Promise.resolve();
      },
      "unsupported_media_type",
      /layer 1 has media type "application\/vnd\.example\.thing"/,
    ],
    [
      "missing blob",
      async (l, m) => {
        await Deno.remove(
          join(l, "blobs", "sha256", (m.layers as { digest: string }[])[1]!.digest.slice(7)),
        );
      },
      "not_found",
      /layer 2 .* is missing/,
    ],
    [
      "corrupt blob",
      async (l, m) => {
        const p = join(
          l,
          "blobs",
          "sha256",
          (m.layers as { digest: string }[])[0]!.digest.slice(7),
        );
        const b = await Deno.readFile(p);
        b[b.length >> 1]! ^= 0xff;
        await Deno.writeFile(p, b);
      },
      "",
      /layer 1 .*(hash|corrupt|deflate|gzip)/,
    ],
    [
      "a path outside the root",
      async (l, m) => {
        await addLayer(l, m, await oneFileTar(l, 10, 1, "../../etc/evil"));
      },
      "unsafe_path",
      /"\.\.\/\.\.\/etc\/evil" has a "\.\." component/,
    ],
    [
      "a decompression bomb",
      async (l, m) => {
        // 50 MiB of zeros, six times over: live bytes fit the 128 MiB disk, the stream does not.
        await addLayer(l, m, await oneFileTar(l, 50 * 1048576, 6));
      },
      "too_large",
      /expand past 256 MiB \(twice the 128 MiB disk\)/,
    ],
    [
      "a file larger than the disk",
      async (l, m) => {
        await addLayer(l, m, await oneFileTar(l, 70 * 1048576));
      },
      "too_large",
      /more than the 128 MiB disk \(--disk-size\) can hold/,
    ],
  ];
  for (const [name, edit, code, re] of cases) {
    const { ref, dir } = await editedLayout(name.replaceAll(" ", "-"), edit);
    const imagesDir = join(dir, "images");
    try {
      const err = await assertRejects(() => ensureImage(ref, { imagesDir, diskBytes: DISK / 2 }));
      assert(err instanceof ImageError, `${name}: ${err}`);
      if (code) assertEquals(err.code, code, `${name}: ${err.message}`);
      assert(re.test(err.message), `${name}: ${err.message}`);
      assert(!err.message.includes("\n"), `${name}: ${err.message}`);
      assertEquals(await cacheEntries(imagesDir), [], name);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("ensureImage - a registry that corrupts a layer: one line, nothing cached, the next pull works", async () => {
  const { ref } = await busybox();
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  await skopeoCopy(ref, `docker://${reg.host}/team/bb:2`);
  const imagesDir = await Deno.makeTempDir();
  try {
    front.rules.push({
      match: (r) => r.method === "GET" && r.path.includes("/blobs/"),
      action: { kind: "corrupt", offset: 1000 },
    });
    const registry = registryResolver({
      retry: { attempts: 1, baseMs: 1, maxMs: 1, maxRetryAfterMs: 1 },
    });
    const err = await assertRejects(() =>
      ensureImage(`${front.host}/team/bb:2`, { imagesDir, diskBytes: DISK, registry })
    );
    assert(err instanceof ImageError && !err.message.includes("\n"), `${err}`);
    assert(/hash|digest|corrupt/i.test(err.message), err.message);
    assertEquals(await cacheEntries(imagesDir), []);
    front.rules.length = 0;
    const ok = await ensureImage(`${front.host}/team/bb:2`, {
      imagesDir,
      diskBytes: DISK,
      registry,
    });
    assertEquals(ok.cached, false);
  } finally {
    await Deno.remove(imagesDir, { recursive: true });
  }
});
