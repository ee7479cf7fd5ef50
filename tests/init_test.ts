/**
 * `shuru init`'s asset build with the real host tools, checked from the outside: the kernel
 * ELF, the initramfs through GNU cpio, the root filesystem through debugfs (e2fsprogs).
 *
 * Uses the default data home's assets folder so CI builds them once (run-tests runs
 * `shuru init` first); never forces a rebuild. The agent is guest/main.ts when present, else
 * the test-only tests/fixtures/test_agent.ts.
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertEquals } from "./_assert.ts";
import { bundleAgent, ensureAssets, type GuestAssets } from "../assets/mod.ts";
import { inspectElf } from "../assets/kernel.ts";
import { homeLayout } from "../host/mod.ts";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const PRODUCT_AGENT = join(REPO, "guest", "main.ts");
const TEST_AGENT = join(REPO, "tests", "fixtures", "test_agent.ts");

async function agentEntry(): Promise<string> {
  try {
    await Deno.stat(PRODUCT_AGENT);
    return PRODUCT_AGENT;
  } catch {
    return TEST_AGENT;
  }
}

let assetsPromise: Promise<GuestAssets> | undefined;
async function assets(): Promise<GuestAssets> {
  const entry = await agentEntry();
  assetsPromise ??= ensureAssets({ assetsDir: homeLayout().assets, agentEntry: entry });
  return await assetsPromise;
}

async function output(cmd: string, args: string[], hint: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert(out.success, `${cmd} ${args.join(" ")} failed (${hint}): ${err}`);
  return new TextDecoder().decode(out.stdout) + err;
}

Deno.test("assets: the kernel is an x86-64 ELF with a PVH entry", async () => {
  const a = await assets();
  assertEquals(inspectElf(await Deno.readFile(a.kernel)), { x86_64: true, pvh: true });
});

Deno.test("assets: the initramfs holds busybox, /init and every module in load order", async () => {
  const a = await assets();
  const dir = await Deno.makeTempDir();
  try {
    const list = await output(
      "sh",
      ["-c", `gzip -dc '${a.initramfs}' | cpio -it --quiet`],
      "apt-get install cpio gzip",
    );
    const names = list.trim().split("\n");
    for (const want of ["init", "bin/busybox", "dev/console"]) assert(names.includes(want), want);
    for (
      const mod of [
        "virtio_mmio",
        "virtio_pci",
        "virtio_blk",
        "virtio_console",
        "crc32c_generic",
        "ext4",
        "jbd2",
        "9p",
        "9pnet_virtio",
        "virtiofs",
        "overlay",
        "virtio_net",
      ]
    ) {
      assert(names.includes(`lib/modules/${mod}.ko`), `module ${mod} missing`);
    }
    const init = await output(
      "sh",
      ["-c", `cd '${dir}' && gzip -dc '${a.initramfs}' | cpio -id --quiet init && cat init`],
      "apt-get install cpio",
    );
    const loads = init.split("\n").filter((l) => /^(want \S+ && )?load /.test(l))
      .flatMap((l) => l.replace(/^want \S+ && /, "").split(" ").slice(1));
    const before = (a: string, b: string) => {
      const ia = loads.indexOf(a);
      const ib = loads.indexOf(b);
      assert(ia >= 0 && ib >= 0 && ia < ib, `${a} must load before ${b}: ${loads.join(" ")}`);
    };
    before("jbd2", "ext4");
    before("crc32c_generic", "ext4");
    before("virtio_ring", "virtio_blk");
    // Either transport may load after the device drivers: a driver binds when its device
    // appears (the PCI one is VZ's, the mmio one QEMU's).
    before("virtio_ring", "virtio_mmio");
    before("virtio_pci_modern_dev", "virtio_pci");
    before("fuse", "virtiofs");
    before("9pnet", "9p");
    before("failover", "virtio_net");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assets: the tools disk holds Deno with its libraries, the agent, busybox, tini and the init", async () => {
  const a = await assets();
  const debugfs = (image: string, request: string) =>
    output("debugfs", ["-R", request, image], "apt-get install e2fsprogs");
  const dir = await Deno.makeTempDir();
  try {
    await debugfs(a.tools, `dump /bin/deno ${dir}/deno`);
    assertEquals((await Deno.stat(`${dir}/deno`)).size, (await Deno.stat(Deno.execPath())).size);
    await debugfs(a.tools, `dump /agent.js ${dir}/agent.js`);
    const bundle = await bundleAgent(Deno.execPath(), await agentEntry());
    assertEquals(await Deno.readFile(`${dir}/agent.js`), bundle);
    for (
      const path of [
        "/bin/busybox",
        "/bin/tini",
        "/lib/ld-linux-x86-64.so.2",
        "/lib/libc.so.6",
        "/libexec/setpriv",
        "/libexec/resize2fs",
        "/deno-cache/v8_code_cache_v2",
        "/init",
        "/agent-run",
      ]
    ) {
      const stat = await debugfs(a.tools, `stat ${path}`);
      assert(
        /Type: regular/.test(stat),
        `${path} missing from the tools disk: ${stat.slice(0, 200)}`,
      );
    }
    const init = await debugfs(a.tools, "stat /init");
    assert(/Mode:\s+0755/.test(init), `the init is not executable: ${init.slice(0, 300)}`);
    // The Debian root has python3 and the fallback init, and no agent of its own.
    for (const path of ["/usr/bin/python3", "/usr/bin/curl", "/usr/bin/git", "/sbin/shuru-init"]) {
      const stat = await debugfs(a.rootfs, `stat ${path}`);
      assert(/Type: (regular|symlink)/.test(stat), `${path} missing from the rootfs`);
    }
    assert(!/Type:/.test(await debugfs(a.rootfs, "stat /opt/shuru/agent.js")));
    assertEquals(a.rootfsBytes, (await Deno.stat(a.rootfs)).size);
    assert(
      a.rootfsBytes >= 4096 * 1024 * 1024,
      "the base filesystem covers the default 4 GiB disk",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assets: a second ensureAssets is a no-op returning the same version", async () => {
  const a = await assets();
  const again = await ensureAssets({
    assetsDir: homeLayout().assets,
    agentEntry: await agentEntry(),
  });
  assertEquals(again.built, false);
  assertEquals(again.version, a.version);
  assertEquals(again.rootfs, a.rootfs);
});

Deno.test("shuru init --json reports the current assets without rebuilding", async () => {
  const a = await assets();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      join(REPO, "main.ts"),
      "init",
      "--json",
      "--agent",
      await agentEntry(),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `shuru init failed: ${stderr}`);
  const report = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(report.version, a.version);
  assertEquals(report.built, false);
  assert(report.accel === "kvm" || report.accel === "tcg");
});

Deno.test("shuru init fails with one actionable line when the agent entry is missing", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      join(REPO, "main.ts"),
      "init",
      "--agent",
      "/nonexistent/main.ts",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 2);
  const stderr = new TextDecoder().decode(out.stderr);
  const last = stderr.trim().split("\n").at(-1) ?? "";
  assert(last.startsWith("shuru: Cannot bundle the guest agent: /nonexistent/main.ts"), stderr);
});

Deno.test("shuru prune removes a crashed run's instance folder", async () => {
  const home = await Deno.makeTempDir({ prefix: "shuru-home-" });
  try {
    const dead = new Deno.Command("true").spawn();
    await dead.status;
    const dir = join(home, "instances", `${dead.pid}-crashed`);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      join(dir, "owner.json"),
      JSON.stringify({ owner: { pid: dead.pid, startTime: 1 }, createdAt: "" }),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", join(REPO, "main.ts"), "prune", "--json"],
      env: { SHURU_HOME: home },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const report = JSON.parse(new TextDecoder().decode(out.stdout));
    assertEquals(report.instances.removed, [`${dead.pid}-crashed`]);
    assertEquals(await Array.fromAsync(Deno.readDir(join(home, "instances"))), []);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("shuru init as a user without subordinate IDs says how to add them, in one line", async () => {
  // nobody (65534) is not root and has no /etc/subuid entry on a stock Debian.
  await assets(); // the agent's stamp is current: no bundling (and no download) as nobody
  const home = await Deno.makeTempDir({ prefix: "shuru-nonroot-home-" });
  try {
    const assetsDir = join(home, "assets");
    await Deno.mkdir(assetsDir);
    for await (const e of Deno.readDir(homeLayout().assets)) {
      if (e.name.startsWith("agent-stamp-")) {
        await Deno.copyFile(join(homeLayout().assets, e.name), join(assetsDir, e.name));
      }
    }
    for (const dir of [home, assetsDir]) await Deno.chown(dir, 65534, 65534);
    const out = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        join(REPO, "main.ts"),
        "init",
        "--agent",
        await agentEntry(),
      ],
      env: {
        SHURU_HOME: home,
        SHURU_ASSETS: assetsDir,
        HOME: home,
        USER: "nobody",
        DENO_DIR: join(home, "deno"),
        PATH: Deno.env.get("PATH") ?? "",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 2, stderr);
    const last = stderr.trim().split("\n").at(-1) ?? "";
    assert(last.startsWith("shuru: Cannot build the guest image as nobody (not root)"), stderr);
    assert(last.includes("sudo usermod --add-subuids"), stderr);
    assert(!stderr.includes("    at "), `a stack trace: ${stderr}`);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
