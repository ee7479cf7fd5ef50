/**
 * Asset bundles: written by us and by GNU tar, read back, and refused when any part is off.
 */

import { join } from "node:path";
import { assert, assertEquals } from "../tests/_assert.ts";
import {
  BUNDLE_MANIFEST,
  BundleError,
  type BundleManifest,
  parseBundleManifest,
  sha256File,
  unpackBundle,
  writeBundle,
} from "./bundle.ts";
import {
  encodeTarHeader as encodeHeader,
  TAR_BLOCK as BLOCK,
  tarPadding as padding,
} from "../io/mod.ts";

const MIB = 1024 * 1024;

/** A small version folder: random kernel and initramfs, a sparse root filesystem. */
async function assetsDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(
    join(dir, "Image"),
    crypto.getRandomValues(new Uint8Array(65536)).map((b) => b),
  );
  await Deno.writeFile(join(dir, "initramfs.img"), crypto.getRandomValues(new Uint8Array(3000)));
  await Deno.writeTextFile(join(dir, "manifest.json"), '{"format":1}\n');
  using rootfs = await Deno.open(join(dir, "rootfs.ext4"), { write: true, create: true });
  await rootfs.write(crypto.getRandomValues(new Uint8Array(4096)));
  await rootfs.seek(8 * MIB, Deno.SeekMode.Start);
  await rootfs.write(crypto.getRandomValues(new Uint8Array(4096)));
  await rootfs.truncate(16 * MIB);
}

async function withTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-bundle-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function unpackError(path: string, into: string, sha256?: string): Promise<BundleError> {
  const err = await unpackBundle(path, into, sha256 ? { sha256 } : {}).then(
    () => undefined,
    (e) => e,
  );
  assert(err instanceof BundleError, `expected a BundleError, got ${err}`);
  // Nothing is left behind.
  assertEquals(await Array.fromAsync(Deno.readDir(into)), []);
  return err;
}

/** A gzip'd tar of `entries` made with our header encoder (typeflag overridable). */
async function gzTar(
  path: string,
  entries: { name: string; data: Uint8Array<ArrayBuffer>; type?: string }[],
): Promise<void> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  for (const e of entries) {
    const h = encodeHeader({ name: e.name, size: e.data.length, mode: 0o644, mtime: 0 });
    if (e.type) {
      h[156] = e.type.charCodeAt(0);
      // Recompute the checksum for the changed type.
      h.fill(0x20, 148, 156);
      const sum = h.reduce((a, b) => a + b, 0);
      h.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    }
    parts.push(h, e.data, new Uint8Array(padding(e.data.length)));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  await ReadableStream.from(parts).pipeThrough(new CompressionStream("gzip")).pipeTo(
    (await Deno.open(path, { write: true, create: true, truncate: true })).writable,
  );
}

function manifestOf(
  files: { name: string; data: Uint8Array<ArrayBuffer> }[],
): Promise<Uint8Array<ArrayBuffer>> {
  return Promise.all(files.map(async (f) => ({
    name: f.name,
    size: f.data.length,
    sha256: [...new Uint8Array(await crypto.subtle.digest("SHA-256", f.data))]
      .map((b) => b.toString(16).padStart(2, "0")).join(""),
  }))).then((list) =>
    new TextEncoder().encode(JSON.stringify({
      format: "shuru-assets-bundle",
      formatVersion: 1,
      arch: "arm64",
      assetsVersion: "v1-0123456789abcdef",
      files: list,
    }))
  );
}

Deno.test("writeBundle/unpackBundle - a version folder round trips, sparse and pinned", async () => {
  await withTemp(async (tmp) => {
    const src = join(tmp, "v1-src");
    await assetsDir(src);
    const bundle = join(tmp, "assets.tar.gz");
    const written = await writeBundle(src, bundle, { arch: "arm64", assetsVersion: "v1-src" });
    assertEquals(written.sha256, await sha256File(bundle));
    // Reproducible: the same files, a second later, make the same bytes.
    await new Promise((r) => setTimeout(r, 1100));
    const again = await writeBundle(src, join(tmp, "again.tar.gz"), {
      arch: "arm64",
      assetsVersion: "v1-src",
    });
    assertEquals(again.sha256, written.sha256);
    assertEquals(written.manifest.files.map((f) => f.name), [
      "Image",
      "initramfs.img",
      "manifest.json",
      "rootfs.ext4",
    ]);
    // GNU tar, an independent reader, sees the manifest first and every file whole.
    const listing = await new Deno.Command("tar", { args: ["-tzvf", bundle], stdout: "piped" })
      .output();
    const lines = new TextDecoder().decode(listing.stdout).trim().split("\n");
    assert(lines[0]!.endsWith(BUNDLE_MANIFEST), lines[0]);
    assert(lines.some((l) => / 16777216 .* rootfs\.ext4$/.test(l)), lines.join("\n"));

    const into = join(tmp, "into");
    await Deno.mkdir(into);
    const manifest = await unpackBundle(bundle, into, { sha256: written.sha256 });
    assertEquals(manifest, written.manifest);
    for (const f of manifest.files) {
      assertEquals(await sha256File(join(into, f.name)), f.sha256);
    }
    // Zero runs were not written: the root filesystem is sparse again.
    const stat = await Deno.stat(join(into, "rootfs.ext4"));
    assertEquals(stat.size, 16 * MIB);
    assert(stat.blocks !== null && stat.blocks * 512 < 4 * MIB, `blocks ${stat.blocks}`);
  });
});

Deno.test("unpackBundle - a bundle made by GNU tar unpacks", async () => {
  await withTemp(async (tmp) => {
    const src = join(tmp, "src");
    await Deno.mkdir(src);
    const files = [
      { name: "Image", data: crypto.getRandomValues(new Uint8Array(5000)) },
      { name: "initramfs.img", data: new TextEncoder().encode("cpio") },
    ];
    for (const f of files) await Deno.writeFile(join(src, f.name), f.data);
    await Deno.writeFile(join(src, BUNDLE_MANIFEST), await manifestOf(files));
    const bundle = join(tmp, "gnu.tar.gz");
    const out = await new Deno.Command("tar", {
      args: [
        "--format=ustar",
        "-czf",
        bundle,
        "-C",
        src,
        BUNDLE_MANIFEST,
        "Image",
        "initramfs.img",
      ],
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const into = join(tmp, "into");
    await Deno.mkdir(into);
    const manifest = await unpackBundle(bundle, into);
    assertEquals(manifest.arch, "arm64");
    assertEquals(await Deno.readFile(join(into, "Image")), files[0]!.data);
  });
});

Deno.test("unpackBundle - a wrong pinned digest is refused before unpacking", async () => {
  await withTemp(async (tmp) => {
    const src = join(tmp, "src");
    await assetsDir(src);
    const bundle = join(tmp, "b.tar.gz");
    await writeBundle(src, bundle, { arch: "arm64", assetsVersion: "v1-x" });
    const into = join(tmp, "into");
    await Deno.mkdir(into);
    const err = await unpackError(bundle, into, "0".repeat(64));
    assertEquals(err.code, "digest_mismatch");
    assert(err.message.endsWith(`expected ${"0".repeat(64)}`), err.message);
  });
});

Deno.test("unpackBundle - a file that differs from the manifest is refused, by name", async () => {
  await withTemp(async (tmp) => {
    const good = { name: "Image", data: new TextEncoder().encode("the real kernel") };
    const manifest = await manifestOf([good]);
    const bundle = join(tmp, "b.tar.gz");
    const into = join(tmp, "into");
    await Deno.mkdir(into);
    await gzTar(bundle, [
      { name: BUNDLE_MANIFEST, data: manifest },
      { name: "Image", data: new TextEncoder().encode("the fake kernel") },
    ]);
    const err = await unpackError(bundle, into);
    assertEquals(err.code, "file_mismatch");
    assert(err.message.includes("Image has SHA-256"), err.message);
    await gzTar(bundle, [
      { name: BUNDLE_MANIFEST, data: manifest },
      { name: "Image", data: new TextEncoder().encode("short") },
    ]);
    assert(
      (await unpackError(bundle, into)).message.includes("Image is 5 bytes, its manifest says 15"),
    );
  });
});

Deno.test("unpackBundle - only the listed regular files, manifest first, nothing missing", async () => {
  await withTemp(async (tmp) => {
    const image = { name: "Image", data: new TextEncoder().encode("kernel") };
    const other = { name: "initramfs.img", data: new TextEncoder().encode("initrd") };
    const manifest = await manifestOf([image, other]);
    const bundle = join(tmp, "b.tar.gz");
    const into = join(tmp, "into");
    await Deno.mkdir(into);
    const cases: [string, { name: string; data: Uint8Array<ArrayBuffer>; type?: string }[]][] = [
      [`its first entry is not ${BUNDLE_MANIFEST}`, [image, {
        name: BUNDLE_MANIFEST,
        data: manifest,
      }, other]],
      ["entry extra.sh is not in its manifest", [
        { name: BUNDLE_MANIFEST, data: manifest },
        image,
        other,
        { name: "extra.sh", data: new Uint8Array(1) },
      ]],
      ["entry Image is a symlink", [{ name: BUNDLE_MANIFEST, data: manifest }, {
        ...image,
        type: "2",
      }]],
      ["it lacks initramfs.img", [{ name: BUNDLE_MANIFEST, data: manifest }, image]],
      ["entry Image appears twice", [{ name: BUNDLE_MANIFEST, data: manifest }, image, image]],
    ];
    for (const [why, entries] of cases) {
      await gzTar(bundle, entries);
      const err = await unpackError(bundle, into);
      assertEquals(err.code, "malformed");
      assertEquals(err.message, `Cannot use bundle ${bundle}: ${why}`);
    }
    // A truncated download.
    await gzTar(bundle, [{ name: BUNDLE_MANIFEST, data: manifest }, image, other]);
    const bytes = await Deno.readFile(bundle);
    await Deno.writeFile(bundle, bytes.subarray(0, bytes.length - 30));
    assertEquals((await unpackError(bundle, into)).code, "malformed");
  });
});

Deno.test("parseBundleManifest - names are plain file names; versions are checked", () => {
  const base: BundleManifest = {
    format: "shuru-assets-bundle",
    formatVersion: 1,
    arch: "arm64",
    assetsVersion: "v1-0123456789abcdef",
    files: [{ name: "Image", size: 1, sha256: "a".repeat(64) }],
  };
  assertEquals(parseBundleManifest(JSON.stringify(base)), base);
  const refused = (m: unknown, why: string) => {
    const err = (() => {
      try {
        parseBundleManifest(JSON.stringify(m));
      } catch (e) {
        return e;
      }
    })();
    assert(err instanceof BundleError && err.code === "malformed", String(err));
    assertEquals(err.message, `Cannot use the bundle: its manifest ${why}`);
  };
  for (const name of ["../Image", "a/b", ".hidden", "", BUNDLE_MANIFEST]) {
    refused(
      { ...base, files: [{ ...base.files[0], name }] },
      `file 0 has name ${JSON.stringify(name)}`,
    );
  }
  refused({ ...base, formatVersion: 2 }, "is version 2, made by a newer shuru (this one reads 1)");
  refused({ ...base, arch: "riscv64" }, 'has arch "riscv64"');
  refused({ ...base, files: [base.files[0], base.files[0]] }, "lists Image twice");
  refused({ ...base, files: [{ ...base.files[0], sha256: "xyz" }] }, 'file Image has sha256 "xyz"');
  refused({ ...base, files: [{ ...base.files[0], size: -1 }] }, "file Image has size -1");
});
