/**
 * Installing guest assets from a bundle: exported from a version folder, installed from a file
 * and over HTTP (a real server on 127.0.0.1), then what `ensureAssets` returns; and every
 * refusal leaves the assets folder as it was.
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { ASSET_FORMAT } from "./version_dir.ts";
import {
  exportBundle,
  forgetInstalledBundle,
  installBundle,
  installedBundleFile,
  parseBundleDigest,
  readInstalledBundle,
} from "./install.ts";
import { BundleError } from "./bundle.ts";
import { AssetError } from "./errors.ts";
import { ensureAssets } from "./mod.ts";

const MIB = 1 << 20;
const VERSION = `v${ASSET_FORMAT}-arm64-0123456789abcdef`;

/** A small but complete arm64 version folder (sparse root filesystem). */
async function versionFolder(dir: string, version = VERSION, format = ASSET_FORMAT) {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(join(dir, "Image"), crypto.getRandomValues(new Uint8Array(65536)));
  await Deno.writeFile(join(dir, "initramfs.img"), crypto.getRandomValues(new Uint8Array(3000)));
  await Deno.writeFile(join(dir, "tools.ext4"), crypto.getRandomValues(new Uint8Array(8192)));
  await Deno.writeTextFile(
    join(dir, "manifest.json"),
    JSON.stringify({
      format,
      arch: "arm64",
      rootfsBytes: 16 * MIB,
      kernelRelease: "6.1.0-test-arm64",
      builtAt: "2026-01-01T00:00:00.000Z",
      timings: {},
    }),
  );
  using rootfs = await Deno.open(join(dir, "rootfs.ext4"), { write: true, create: true });
  await rootfs.write(crypto.getRandomValues(new Uint8Array(4096)));
  await rootfs.seek(8 * MIB, Deno.SeekMode.Start);
  await rootfs.write(crypto.getRandomValues(new Uint8Array(4096)));
  await rootfs.truncate(16 * MIB);
  return { dir, version, arch: "arm64" as const };
}

async function withTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-install-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Serves `file` on 127.0.0.1 (a `status` instead, when given). */
function serve(
  file: string,
  options: { status?: number } = {},
): Deno.HttpServer<Deno.NetAddr> & { url: string } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
    if (options.status) return new Response("no", { status: options.status });
    return new Response(await Deno.readFile(file));
  });
  return Object.assign(server, { url: `http://127.0.0.1:${server.addr.port}/bundle.tar.gz` });
}

/** A raw HTTP server that announces `file`'s whole length, sends `bytes` of it and hangs up. */
function serveCut(file: string, bytes: number): AsyncDisposable & { url: string } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    for await (const conn of listener) {
      const data = await Deno.readFile(file);
      const head = `HTTP/1.1 200 OK\r\ncontent-length: ${data.length}\r\nconnection: close\r\n\r\n`;
      try {
        await conn.write(new TextEncoder().encode(head));
        await conn.write(data.subarray(0, bytes));
      } catch { /* the client went away */ }
      conn.close();
    }
  })();
  return {
    url: `http://127.0.0.1:${listener.addr.port}/bundle.tar.gz`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done.catch(() => {});
    },
  };
}

/** The names in `dir`, sorted. */
async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("installBundle - export, install from a file and over HTTP; ensureAssets uses it", async () => {
  await withTemp(async (tmp) => {
    const source = await versionFolder(join(tmp, "built", VERSION));
    const file = join(tmp, "bundle.tar.gz");
    const events: string[] = [];
    const written = await exportBundle(source, file, {
      onProgress: (e) => events.push(`${e.kind}:${e.step}`),
    });
    assertEquals(events[0], "start:export");
    assertEquals(events.at(-1), "done:export");
    assertEquals(await names(tmp), ["built", "bundle.tar.gz"]); // no partial file left

    for (const how of ["file", "http"] as const) {
      const assetsDir = join(tmp, `assets-${how}`);
      await using server = how === "http" ? serve(file) : undefined;
      const result = await installBundle(server ? server.url : file, {
        assetsDir,
        arch: "arm64",
        sha256: `sha256:${written.sha256}`,
      });
      assertEquals(result.unpacked, true);
      assertEquals(result.bundle.version, VERSION);
      assertEquals(result.bundle.sha256, written.sha256);
      assertEquals(await names(assetsDir), ["installed-arm64.json", VERSION]);
      for (const f of ["Image", "initramfs.img", "rootfs.ext4", "tools.ext4", "manifest.json"]) {
        assertEquals(
          await Deno.readFile(join(assetsDir, VERSION, f)),
          await Deno.readFile(join(source.dir, f)),
          f,
        );
      }
      // ensureAssets answers with the installed bundle, building nothing (checkOnly first: it
      // never builds, so a broken lookup fails here at once).
      assertEquals(
        (await ensureAssets({ assetsDir, arch: "arm64", checkOnly: true })).version,
        VERSION,
      );
      const assets = await ensureAssets({ assetsDir, arch: "arm64" });
      assertEquals(assets.version, VERSION);
      assertEquals(assets.kernel, join(assetsDir, VERSION, "Image"));
      assertEquals(assets.kernelRelease, "6.1.0-test-arm64");
      assertEquals(assets.rootfsBytes, 16 * MIB);
      assertEquals([assets.built, assets.present], [false, true]);
      // The same bundle again: the folder is kept.
      assertEquals((await installBundle(file, { assetsDir })).unpacked, false);
      await forgetInstalledBundle(assetsDir, "arm64");
      assertEquals(await readInstalledBundle(assetsDir, "arm64"), undefined);
    }
  });
});

Deno.test("installBundle - refusals leave nothing installed", async () => {
  await withTemp(async (tmp) => {
    const file = join(tmp, "bundle.tar.gz");
    const written = await exportBundle(await versionFolder(join(tmp, "v", VERSION)), file);
    const bytes = await Deno.readFile(file);
    const assetsDir = join(tmp, "assets");
    const refused = async (
      source: string,
      options: { sha256?: string; arch?: "x86_64" | "arm64" },
      cls: typeof BundleError | typeof AssetError,
      message: string,
    ) => {
      const err = await assertRejects(() => installBundle(source, { assetsDir, ...options }));
      assert(err instanceof cls, `${err}`);
      assert((err as Error).message.includes(message), (err as Error).message);
      assert(!(err as Error).message.includes("\n"), "one line");
      assertEquals(await names(assetsDir), [], "nothing may be left in the assets folder");
      return err as Error;
    };

    const wrong = "0".repeat(64);
    await refused(file, { sha256: wrong }, BundleError, `expected ${wrong}`);
    await refused(file, { arch: "x86_64" }, AssetError, "it holds arm64 assets, not x86_64");

    const truncated = join(tmp, "truncated.tar.gz");
    await Deno.writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    await refused(truncated, {}, BundleError, `Cannot use bundle ${truncated}`);

    // One byte changed in the middle of the compressed data.
    const corrupt = join(tmp, "corrupt.tar.gz");
    const flipped = bytes.slice();
    flipped[Math.floor(bytes.length / 2)]! ^= 0x55;
    await Deno.writeFile(corrupt, flipped);
    await refused(corrupt, {}, BundleError, `Cannot use bundle ${corrupt}`);
    // Pinned: refused before anything is read as an archive.
    await refused(corrupt, { sha256: written.sha256 }, BundleError, "its SHA-256 is");

    // Assets of another format (made by another shuru version).
    const oldFile = join(tmp, "old.tar.gz");
    const old = `v${ASSET_FORMAT - 1}-arm64-0123456789abcdef`;
    await exportBundle(await versionFolder(join(tmp, "o", old), old, ASSET_FORMAT - 1), oldFile);
    await refused(oldFile, {}, AssetError, `are in format ${ASSET_FORMAT - 1}`);

    {
      await using missing = serve(file, { status: 404 });
      await refused(missing.url, {}, AssetError, "HTTP 404");
    }
    {
      await using cut = serveCut(file, 1000);
      await refused(cut.url, {}, AssetError, `Cannot download bundle ${cut.url}`);
    }
    assertEquals(await readInstalledBundle(assetsDir, "arm64"), undefined);
    assert(
      !(await Deno.stat(installedBundleFile(assetsDir, "arm64")).then(() => true, () => false)),
    );
  });
});

Deno.test("parseBundleDigest - sha256:HEX or bare hex; anything else refused", () => {
  const hex = "AB".repeat(32);
  assertEquals(parseBundleDigest(`sha256:${hex}`), hex.toLowerCase());
  assertEquals(parseBundleDigest(hex), hex.toLowerCase());
  for (const bad of ["sha256:abc", "md5:" + "a".repeat(32), "", "sha512:" + "a".repeat(64)]) {
    let err: unknown;
    try {
      parseBundleDigest(bad);
    } catch (e) {
      err = e;
    }
    assert(err instanceof AssetError && err.code === "bundle_refused", `${bad}: ${err}`);
  }
});

Deno.test("canBuildAssets - Linux builds; macOS installs bundles", async () => {
  const { canBuildAssets } = await import("./mod.ts");
  assertEquals(canBuildAssets("linux"), true);
  assertEquals(canBuildAssets("darwin"), false);
});
