/**
 * A checkpoint of an image, pushed to a real registry on 127.0.0.1 and used from another data
 * home without pulling it first, every way a sandbox starts (three boots under TCG):
 *
 * - `run --from REF` runs the image's Cmd as its User, in its WorkingDir, with its Env (the
 *   `.idx` carries the image's settings and the guest architecture);
 * - a wrong `--arch` is refused in one line before anything boots (`run` and `start`);
 * - `start --from REF`, `exec` (the image's settings apply), a live checkpoint, `stop`;
 * - the SDK: `Sandbox.fromCheckpoint(REF)`, exec, dispose;
 * - `checkpoint pull` keeps the image and the architecture; the artifact's config names the
 *   architecture for clients that only read the config (`skopeo inspect --config`).
 *
 * And, without a boot, an arm64 checkpoint (made through the store API) pushed: the
 * architecture `start` builds assets for is arm64, and `--arch x86_64` is refused in one line.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { testDeadline } from "./_deadline.ts";
import { BUSYBOX_CONFIG, busyboxImage } from "./_images.ts";
import { skopeo, TestRegistry } from "./_registry.ts";
import { type CliResult, shuruCommandLine, TestHome } from "./_shuru.ts";
import { homeLayout } from "../host/mod.ts";
import { RunnerError, specArch } from "../runner/mod.ts";
import { resolveSpec } from "../spec/mod.ts";
import { pushCheckpoint, Store } from "../store/mod.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** One line on stderr, starting "shuru: Cannot", containing `includes`; nothing on stdout. */
function oneLine(r: CliResult, includes: string): void {
  assert(r.code !== 0, `expected a failure:\n${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assert(lines[0]!.startsWith("shuru: Cannot "), r.stderr);
  assert(lines[0]!.includes(includes), `expected "${includes}" in: ${r.stderr}`);
}

async function sandboxes(home: TestHome): Promise<{ name: string; from: string | null }[]> {
  return JSON.parse(ok(await home.run(["ps", "--json"]), "ps").stdout);
}

const NAME =
  "a checkpoint of an image through a registry: run --from REF, start --from REF and the SDK get its settings and arch";
testDeadline(1800, NAME);
Deno.test(NAME, async (t) => {
  const c = BUSYBOX_CONFIG;
  await using reg = await TestRegistry.start();
  await using h1 = await TestHome.create();
  const dir = await Deno.makeTempDir({ prefix: "shuru-remote-sandbox-" });
  try {
    const image = await busyboxImage(join(dir, "image"));
    ok(
      await h1.run([
        "checkpoint",
        "create",
        "bb",
        "--image",
        image,
        "--disk-size",
        "512",
        "--",
        "sh",
        "-c",
        "echo pushed > /home/app/marker",
      ]),
      "checkpoint create --image",
    );
    const ref = reg.ref("team/bb:1");
    const pushed = JSON.parse(
      ok(await h1.run(["checkpoint", "push", "bb", ref, "--json"]), "push").stdout,
    );
    assert(/^sha256:[0-9a-f]{64}$/.test(pushed.digest), JSON.stringify(pushed));

    await using h2 = await TestHome.create();
    const show = 'echo "$(cat marker)|$(id -u)|$(pwd)|$GREETING"';
    const expected = `pushed|${c.uid}|${c.workingDir}|hello from the image`;

    await t.step("run --from REF runs the image's Cmd as its User with its Env", async () => {
      const r = ok(await h2.run(["run", "--from", ref]), "run --from REF");
      assert(
        r.stdout.includes(
          `uid=${c.uid} gid=${c.gid} cwd=${c.workingDir} greeting=hello from the image`,
        ),
        r.stdout,
      );
      assert(r.stdout.split("\n").includes("layer2"), r.stdout);
      const cmd = ok(await h2.run(["run", "--from", ref, "--", "sh", "-c", show]), "run -- cmd");
      assertEquals(cmd.stdout.trim(), expected);
    });

    await t.step("a wrong --arch is refused in one line, before anything boots", async () => {
      const msg = "it holds an x86_64 guest's disk";
      oneLine(await h2.run(["run", "--from", ref, "--arch", "arm64", "--", "true"]), msg);
      oneLine(await h2.run(["start", "--name", "wrong", "--from", ref, "--arch", "arm64"]), msg);
      assertEquals(await sandboxes(h2), []);
    });

    await t.step(
      "start --from REF: exec with the image's settings, live checkpoint, stop",
      async () => {
        let started = false;
        try {
          const s = ok(await h2.run(["start", "--name", "lazy", "--from", ref]), "start --from");
          started = true;
          assertEquals(s.stdout.trim(), "lazy");
          const [row] = await sandboxes(h2);
          assertEquals([row?.name, row?.from], ["lazy", ref]);
          const e = ok(await h2.run(["exec", "lazy", "--", "sh", "-c", show]), "exec");
          assertEquals(e.stdout.trim(), expected);
          ok(
            await h2.run(["exec", "lazy", "--", "sh", "-c", "echo saved > /home/app/later"]),
            "exec write",
          );
          ok(await h2.run(["checkpoint", "save", "later", "--sandbox", "lazy"]), "save");
        } finally {
          if (started) ok(await h2.run(["stop", "lazy"]), "stop");
        }
        const saved = JSON.parse(
          ok(await h2.run(["checkpoint", "inspect", "later", "--json"]), "inspect").stdout,
        );
        assertEquals([saved.image?.ref, saved.arch ?? "x86_64"], [image, "x86_64"]);
      },
    );

    await t.step("the SDK: Sandbox.fromCheckpoint(REF), exec, dispose", async () => {
      const { Sandbox } = await import("../mod.ts");
      const env = h2.env();
      // The SDK runs `shuru start`; give it this test's assets and accelerator.
      const shuru = [
        "/usr/bin/env",
        `SHURU_ASSETS=${env.SHURU_ASSETS}`,
        `SHURU_ACCEL=${env.SHURU_ACCEL}`,
        ...shuruCommandLine(),
      ];
      {
        await using sb = await Sandbox.fromCheckpoint(ref, {
          home: h2.dir,
          name: "sdk",
          shuru,
        });
        const r = await sb.exec(["sh", "-c", show]);
        assertEquals([r.stdout.trim(), r.exitCode], [expected, 0]);
        assertEquals((sb.info.sandbox as { from?: string }).from, ref);
        assertEquals(await sb.fs.readTextFile("/home/app/marker"), "pushed\n");
      }
      const deadline = Date.now() + 60_000;
      while ((await sandboxes(h2)).length > 0) {
        assert(Date.now() < deadline, "the SDK's sandbox did not stop");
        await new Promise((r) => setTimeout(r, 500));
      }
    });

    await t.step("pull keeps the image and the arch; the config names the arch", async () => {
      await using h3 = await TestHome.create();
      ok(await h3.run(["checkpoint", "pull", ref, "bb"]), "pull");
      const got = JSON.parse(
        ok(await h3.run(["checkpoint", "inspect", "bb", "--json"]), "inspect").stdout,
      );
      assertEquals([got.image?.ref, got.arch, got.origin?.digest], [
        image,
        "x86_64",
        pushed.digest,
      ]);
      const inspected = await skopeo([
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        `docker://${ref}`,
      ]);
      assertEquals(inspected.code, 0, inspected.stderr);
      const config = JSON.parse(inspected.stdout);
      assertEquals(config.arch, "x86_64");
      assertEquals(config.image, image);
    });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("an arm64 checkpoint through a registry: start knows its arch before booting; --arch x86_64 is refused", async () => {
  await using reg = await TestRegistry.start();
  await using home = await TestHome.create();
  const dir = await Deno.makeTempDir({ prefix: "shuru-remote-arch-" });
  try {
    const store = await Store.open(join(dir, "pusher"), { log: () => {} });
    await Deno.writeFile(join(dir, "disk.img"), new Uint8Array(1 << 20).fill(9));
    const device = await store.openDevice({ base: join(dir, "disk.img") }, {
      overlayDir: join(dir, "ov"),
      arch: "arm64",
    });
    try {
      await device.save("arm");
    } finally {
      await device.close();
    }
    const ref = reg.ref("team/arm:1");
    await pushCheckpoint(store, "arm", ref);
    const layout = homeLayout(home.dir);
    assertEquals(await specArch(layout, resolveSpec([{ from: ref }])), "arm64");
    const err = await specArch(layout, resolveSpec([{ from: ref, arch: "x86_64" }])).then(
      () => null,
      (e) => e,
    );
    assert(err instanceof RunnerError && err.code === "invalid_config", String(err));
    const msg = "it holds an arm64 guest's disk";
    oneLine(await home.run(["run", "--from", ref, "--arch", "x86_64", "--", "true"]), msg);
    oneLine(await home.run(["start", "--from", ref, "--arch", "x86_64"]), msg);
    assertEquals(await sandboxes(home), []);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
