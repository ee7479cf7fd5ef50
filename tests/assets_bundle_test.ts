/**
 * Guest assets as a bundle, end to end through the CLI, the way a Mac gets them: the arm64
 * assets exported on this host (`shuru init --arch arm64 --export FILE`), installed into fresh
 * data homes from the file and from an HTTP server on 127.0.0.1 (`shuru init --bundle FILE|URL
 * --bundle-digest sha256:…`), and the installed guest booted (`run --arch arm64 -- uname -m`:
 * one boot, an emulated arm64 one is slow); pushed to a registry (`--export docker://…`, a real
 * `docker-registry` on 127.0.0.1) as an OCI artifact and installed from its pinned manifest. A
 * wrong digest, a truncated bundle and a corrupted one are each refused in one line, exit code 2,
 * with nothing installed.
 *
 * Needs the arm64 guest image (`./shuru init --arch arm64`; run-tests builds it).
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { TestHome } from "./_shuru.ts";
import { testDeadline } from "./_deadline.ts";
import { TestRegistry } from "./_registry.ts";

const NAME =
  "bundles: export arm64 assets, install from a file, over HTTP and from a registry, boot; refusals";
testDeadline(30 * 60, NAME);

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assertEquals(r.code, 0, `${what}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** What an assets folder holds (version folders, the installed-bundle records). */
async function contents(assetsDir: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(assetsDir))).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

Deno.test(NAME, async (t) => {
  await using builder = await TestHome.create();
  const dir = await Deno.makeTempDir({ prefix: "shuru-bundle-e2e-" });
  try {
    const file = join(dir, "shuru-assets-arm64.tar.gz");
    const exported = JSON.parse(
      ok(
        await builder.run(["init", "--arch", "arm64", "--export", file, "--json"]),
        "init --export",
      ).stdout,
    );
    const digest: string = exported.bundle.sha256;
    assert(/^sha256:[0-9a-f]{64}$/.test(digest), digest);
    assertEquals(exported.bundle.path, file);
    const version: string = exported.version;

    await t.step("install from the file into a fresh data home", async () => {
      await using home = await TestHome.create();
      const assets = join(home.dir, "assets");
      const r = ok(
        await home.run(["init", "--bundle", file, "--bundle-digest", digest], {
          env: { SHURU_ASSETS: assets },
        }),
        "init --bundle FILE",
      );
      assert(r.stdout.includes(`guest assets installed: ${join(assets, version)}`), r.stdout);
      assert(r.stderr.includes("unpacking the bundle"), r.stderr);
      assertEquals(await contents(assets), ["installed-arm64.json", version]);
    });

    await t.step("install over HTTP into a fresh data home, then boot it", async () => {
      await using home = await TestHome.create();
      const assets = join(home.dir, "assets");
      await using server = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen: () => {} },
        async () => {
          // Streamed from the file (the response closes it).
          const f = await Deno.open(file);
          const size = (await f.stat()).size;
          return new Response(f.readable, { headers: { "content-length": String(size) } });
        },
      );
      const url = `http://127.0.0.1:${server.addr.port}/shuru-assets-arm64.tar.gz`;
      const env = { SHURU_ASSETS: assets };
      const r = ok(
        await home.run(["init", "--bundle", url, "--bundle-digest", digest], { env }),
        "init --bundle URL",
      );
      assert(r.stderr.includes(`downloading ${url}`), r.stderr);
      assertEquals(await contents(assets), ["installed-arm64.json", version]);
      const run = ok(
        await home.run(["run", "--arch", "arm64", "--", "uname", "-m"], { env }),
        "run",
      );
      assertEquals(run.stdout.trim(), "aarch64");
    });

    await t.step("push to a registry (docker://), install the pinned artifact", async () => {
      await using registry = await TestRegistry.start();
      const target = `docker://${registry.host}/shuru/assets:arm64`;
      const pushed = JSON.parse(
        ok(
          await builder.run(["init", "--arch", "arm64", "--export", target, "--json"]),
          "init --export docker://",
        ).stdout,
      );
      // The same files make the same bundle: the digest a file export printed.
      assertEquals(pushed.bundle.sha256, digest);
      const pinned: string = pushed.bundle.path;
      assert(pinned.startsWith(`docker://${registry.host}/shuru/assets@sha256:`), pinned);
      await using home = await TestHome.create();
      const assets = join(home.dir, "assets");
      const env = { SHURU_ASSETS: assets };
      const r = ok(
        await home.run(["init", "--bundle", pinned, "--bundle-digest", digest], { env }),
        "init --bundle docker://",
      );
      assert(r.stderr.includes(`pulling ${pinned}`), r.stderr);
      assertEquals(await contents(assets), ["installed-arm64.json", version]);
      // The tag with another pinned digest: refused in one line, the installed one untouched.
      const wrong = await home.run(
        ["init", "--bundle", target, "--bundle-digest", `sha256:${"1".repeat(64)}`, "--json"],
        { env },
      );
      assertEquals(wrong.code, 2, wrong.stderr);
      assertEquals(wrong.stderr.trim().split("\n").length, 1, wrong.stderr);
      assert(wrong.stderr.includes("its SHA-256 is"), wrong.stderr);
      assertEquals(await contents(assets), ["installed-arm64.json", version]);
    });

    await t.step(
      "a wrong digest, a truncated and a corrupted bundle: one line, nothing installed",
      async () => {
        await using home = await TestHome.create();
        const assets = join(home.dir, "assets");
        const bytes = await Deno.readFile(file);
        const truncated = join(dir, "truncated.tar.gz");
        await Deno.writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
        const corrupt = join(dir, "corrupt.tar.gz");
        const flipped = bytes.slice();
        // A byte inside the root filesystem's compressed data.
        flipped[Math.floor(bytes.length * 0.7)]! ^= 0xff;
        await Deno.writeFile(corrupt, flipped);
        const cases: [string[], string][] = [
          [["--bundle", file, "--bundle-digest", `sha256:${"0".repeat(64)}`], "its SHA-256 is"],
          [["--bundle", truncated], `Cannot use bundle ${truncated}`],
          [["--bundle", corrupt], `Cannot use bundle ${corrupt}`],
          [["--bundle", corrupt, "--bundle-digest", digest], "its SHA-256 is"],
          [["--bundle", file, "--arch", "x86_64"], "it holds arm64 assets, not x86_64"],
        ];
        for (const [args, message] of cases) {
          // --json: no progress lines, so stderr holds the refusal alone.
          const r = await home.run(["init", ...args, "--json"], { env: { SHURU_ASSETS: assets } });
          assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
          const lines = r.stderr.trim().split("\n");
          assertEquals(lines.length, 1, r.stderr);
          assert(lines[0]!.startsWith("shuru: ") && lines[0]!.includes(message), r.stderr);
          assertEquals(r.stdout, "");
          assertEquals(await contents(assets), [], `${args.join(" ")} left files`);
        }
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
