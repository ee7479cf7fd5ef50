/**
 * `shuru upgrade` against a local bare repository as the upstream (no network): this checkout
 * is cloned into a bare "upstream", a working clone runs the upgrade, and a third clone pushes
 * new commits. The working clone's guest assets live in their own folder, seeded with links to
 * the shared Debian tarball and root filesystem, so a rebuild redoes only the kernel, initramfs
 * and tools disk.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { TestHome } from "./_shuru.ts";
import { testDeadline } from "./_deadline.ts";
import { run } from "./_images.ts";
import { homeLayout } from "../host/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function sh(cmd: string, args: string[], cwd: string): Promise<string> {
  return (await run(cmd, args, cwd)).trim();
}

const GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"];

/** Commits `edit`'s changes in the clone `dev` and pushes them upstream. */
async function pushCommit(dev: string, message: string, edit: () => Promise<void>) {
  await sh("git", ["pull", "--quiet", "--ff-only"], dev);
  await edit();
  await sh("git", [...GIT_ID, "commit", "--quiet", "-am", message], dev);
  await sh("git", ["push", "--quiet"], dev);
}

async function replaceIn(path: string, from: RegExp, to: string): Promise<void> {
  const text = await Deno.readTextFile(path);
  assert(from.test(text), `${path} has no ${from}`);
  await Deno.writeTextFile(path, text.replace(from, to));
}

/** An assets folder of its own, sharing the built Debian tarball and root filesystem. */
async function seededAssets(dir: string): Promise<string> {
  const shared = join(homeLayout().assets, "cache");
  const assets = join(dir, "assets");
  await Deno.mkdir(join(assets, "cache"), { recursive: true });
  let seeded = 0;
  for await (const e of Deno.readDir(shared)) {
    if (!/^(debian-bookworm-[0-9a-f]+\.tar|rootfs-[0-9a-f]+\.ext4)$/.test(e.name)) continue;
    const to = join(assets, "cache", e.name);
    await Deno.link(join(shared, e.name), to).catch(() =>
      sh("cp", ["--sparse=always", join(shared, e.name), to], dir)
    );
    seeded++;
  }
  assert(seeded >= 2, `no built guest assets to share in ${shared}: run ./shuru init first`);
  return assets;
}

testDeadline(
  1200,
  "shuru upgrade: check, fast-forward, assets rebuilt only when their version changes, refusals",
);
Deno.test("shuru upgrade: check, fast-forward, assets rebuilt only when their version changes, refusals", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-upgrade-" });
  await using home = await TestHome.create();
  try {
    const upstream = join(dir, "upstream.git");
    const work = join(dir, "work");
    const dev = join(dir, "dev");
    await sh("git", ["clone", "--quiet", "--bare", "--no-local", ROOT, upstream], dir);
    await sh("git", ["clone", "--quiet", upstream, work], dir);
    await sh("git", ["clone", "--quiet", upstream, dev], dir);
    // Deno and the npm packages: this checkout's (npm ci would need the network).
    await Deno.symlink(join(ROOT, "node_modules"), join(work, "node_modules"));
    const env = home.env({ SHURU_ASSETS: await seededAssets(dir) });
    const shuru = async (args: string[]) => {
      const out = await new Deno.Command(join(work, "shuru"), {
        args,
        cwd: work,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    };
    const head = () => sh("git", ["rev-parse", "--short", "HEAD"], work);
    const built = JSON.parse((await shuru(["init", "--json"])).stdout);
    const start = await head();

    await t.step("up to date: one line, nothing done", async () => {
      const r = await shuru(["upgrade"]);
      assertEquals(r.code, 0, r.stderr);
      assert(/is up to date with origin\//.test(r.stdout), r.stdout);
    });

    await pushCommit(dev, "version 9.9.9", async () => {
      await replaceIn(join(dev, "host", "version.ts"), /VERSION = "[^"]+"/, 'VERSION = "9.9.9"');
      await Deno.writeTextFile(join(dev, "README.md"), "\nA line from upstream.\n", {
        append: true,
      });
    });

    await t.step("--check reports the new version and changes nothing", async () => {
      const r = await shuru(["upgrade", "--check"]);
      assertEquals(r.code, 0, r.stderr);
      assert(
        /→ 9\.9\.9 \([0-9a-f]+\) is available: 1 commits on origin\//.test(r.stdout),
        r.stdout,
      );
      assert(/npm dependencies: unchanged/.test(r.stdout), r.stdout);
      assertEquals(await head(), start);
    });

    await t.step(
      "upgrade fast-forwards; the assets' version is the same, so nothing is rebuilt",
      async () => {
        const r = await shuru(["upgrade", "--json"]);
        assertEquals(r.code, 0, r.stderr);
        const report = JSON.parse(r.stdout);
        assertEquals([report.upgraded, report.behind, report.to.version], [true, 1, "9.9.9"]);
        assertEquals(report.npm, "unchanged");
        assertEquals(report.assets, { from: built.version, to: built.version, rebuilt: false });
        assert((await shuru(["--version"])).stdout.startsWith("9.9.9"));
      },
    );

    await pushCommit(dev, "agent 9.9.9", async () => {
      await replaceIn(
        join(dev, "guest", "agent.ts"),
        /AGENT_VERSION = "[^"]+"/,
        'AGENT_VERSION = "9.9.9"',
      );
    });

    await t.step("an agent change: the new assets are built, old → new printed", async () => {
      const r = await shuru(["upgrade"]);
      assertEquals(r.code, 0, r.stderr);
      const m = /guest assets: rebuilt, (v\d+-\w+-[0-9a-f]+) → (v\d+-\w+-[0-9a-f]+)/.exec(r.stdout);
      assert(m && m[1] === built.version && m[2] !== built.version, r.stdout);
      assert(
        /shuru 9\.9\.9 \([0-9a-f]+\) → 9\.9\.9 \([0-9a-f]+\): 1 commits from origin\//.test(
          r.stdout,
        ),
        r.stdout,
      );
    });

    await t.step("local changes are refused with one line", async () => {
      await Deno.writeTextFile(join(work, "README.md"), "local edit\n", { append: true });
      const r = await shuru(["upgrade"]);
      assertEquals(r.code, 2);
      assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert(
        /Cannot upgrade: the checkout has local changes \(README\.md\)/.test(r.stderr),
        r.stderr,
      );
      await sh("git", ["checkout", "--quiet", "README.md"], work);
    });

    await t.step("a diverged branch is refused with one line", async () => {
      await Deno.writeTextFile(join(work, "LOCAL"), "x\n");
      await sh("git", ["add", "LOCAL"], work);
      await sh("git", [...GIT_ID, "commit", "--quiet", "-m", "local"], work);
      await pushCommit(dev, "upstream again", async () => {
        await Deno.writeTextFile(join(dev, "README.md"), "\nAgain.\n", { append: true });
      });
      const before = await head();
      const r = await shuru(["upgrade"]);
      assertEquals(r.code, 2);
      assert(
        /Cannot upgrade: .* and origin\/\S+ have diverged \(1 local and 1 upstream commits\)/.test(
          r.stderr,
        ),
        r.stderr,
      );
      assertEquals(await head(), before);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
