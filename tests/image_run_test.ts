/**
 * Images as sandboxes, booted for real under TCG (four boots in all):
 *
 * 1. `start --image` of the busybox-only image (no libc, no python: the agent and everything
 *    it runs on come from the tools disk): `ps` lists it and its exposed port, `exec` runs as
 *    its User in its WorkingDir with its Env (under `-e`), a live checkpoint works without
 *    fsfreeze in the image, and `run --from` that checkpoint runs the image's Cmd on the
 *    filesystem its layers made (two boots);
 * 2. `checkpoint create --image` of a Debian + python3 image pulled from a registry on
 *    127.0.0.1: its Env and WorkingDir apply, and the checkpoint shares its chunks with the
 *    image;
 * 3. `run --rootfs` of a plain ext4 (busybox, nothing of shuru's) with `--kernel` pointing at
 *    the host's bzImage;
 * plus the one-line refusals of bad boot files (no boot).
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { type CliResult, shuruCommandLine, TestHome } from "./_shuru.ts";
import { testDeadline } from "./_deadline.ts";
import { TestRegistry } from "./_registry.ts";
import {
  BUSYBOX_CONFIG,
  busyboxImage,
  debianPythonImage,
  run as runTool,
  skopeoCopy,
} from "./_images.ts";
import { findHostKernel } from "../assets/kernel.ts";

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

testDeadline(
  1200,
  "start --image: a busybox-only image: ps, exec as its User with its Env, live checkpoint, run --from runs its Cmd",
);
Deno.test("start --image: a busybox-only image: ps, exec as its User with its Env, live checkpoint, run --from runs its Cmd", async (t) => {
  await using home = await TestHome.create();
  const dir = await Deno.makeTempDir({ prefix: "shuru-image-run-" });
  const c = BUSYBOX_CONFIG;
  try {
    const ref = await busyboxImage(dir);
    let started = false;
    try {
      await t.step(
        "start converts the image, then boots it; ps lists it and its exposed port",
        async () => {
          const r = ok(
            await home.run(["start", "--name", "bb", "--image", ref, "--disk-size", "512"]),
            "start --image",
          );
          started = true;
          assertEquals(r.stdout.trim(), "bb");
          assert(/shuru: image: unpacking layer 2/.test(r.stderr), r.stderr);
          const rows = JSON.parse(ok(await home.run(["ps", "--json"]), "ps").stdout);
          assertEquals([rows[0].image, rows[0].exposedPorts], [ref, [c.exposed]]);
          const table = ok(await home.run(["ps"]), "ps").stdout;
          assert(/EXPOSED/.test(table) && table.includes(c.exposed), table);
        },
      );
      await t.step(
        "exec runs as the image's User, in its WorkingDir, with its Env under -e",
        async () => {
          const show = 'echo "$(id -u)|$(id -g)|$(id -G)|$(pwd)|$GREETING|$HOME"';
          const r = ok(await home.run(["exec", "bb", "--", "sh", "-c", show]), "exec");
          assertEquals(
            r.stdout.trim(),
            `${c.uid}|${c.gid}|${c.gid} 2000|${c.workingDir}|hello from the image|${c.workingDir}`,
          );
          const e = ok(
            await home.run([
              "exec",
              "bb",
              "-e",
              "GREETING=mine",
              "--cwd",
              "/tmp",
              "--",
              "sh",
              "-c",
              show,
            ]),
            "exec -e",
          );
          assertEquals(e.stdout.trim().split("|").slice(3, 5), ["/tmp", "mine"]);
          ok(await home.run(["exec", "bb", "--", "sh", "-c", "echo kept > notes2"]), "exec write");
        },
      );
      await t.step(
        "a live checkpoint freezes with the tools disk's busybox (the image has no fsfreeze)",
        async () => {
          ok(
            await home.run(["checkpoint", "save", "bb-snap", "--sandbox", "bb"]),
            "checkpoint save",
          );
        },
      );
    } finally {
      if (started) await home.run(["stop", "bb"]);
    }
    await t.step(
      "run --from the checkpoint runs the image's Cmd, as its User, on its layers",
      async () => {
        const r = ok(await home.run(["run", "--from", "bb-snap"]), "run --from");
        assert(
          r.stdout.includes(
            `uid=${c.uid} gid=${c.gid} cwd=${c.workingDir} greeting=hello from the image ` +
              `home=${c.workingDir}`,
          ),
          r.stdout,
        );
        const listing = r.stdout.split("\n");
        assert(listing.includes("layer2") && listing.includes("opaque"), r.stdout);
        assert(!listing.includes("gone"), `the whiteout of layer 2 was ignored:\n${r.stdout}`);
        const snap = JSON.parse(
          ok(await home.run(["checkpoint", "inspect", "bb-snap", "--json"]), "inspect").stdout,
        );
        assertEquals(snap.image.ref, ref);
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint create --image from a registry: a Debian + python3 image; the checkpoint shares its chunks", async () => {
  await using home = await TestHome.create();
  await using reg = await TestRegistry.start();
  const dir = await Deno.makeTempDir({ prefix: "shuru-image-py-" });
  const ref = `${reg.host}/team/py:1`;
  try {
    await skopeoCopy(await debianPythonImage(dir), `docker://${ref}`);
    const r = ok(
      await home.run([
        "checkpoint",
        "create",
        "py",
        "--image",
        ref,
        "--",
        "python3",
        "-c",
        "import os, sys; print(os.getcwd(), os.environ['PIP_NO_INPUT'], sys.executable); " +
        "open('/srv/made-here', 'w').write('kept')",
      ]),
      "checkpoint create --image",
    );
    assertEquals(r.stdout.trim(), "/srv 1 /usr/bin/python3");
    const info = JSON.parse(
      ok(await home.run(["checkpoint", "inspect", "py", "--json"]), "inspect").stdout,
    );
    assertEquals(info.image.ref, ref);
    // The image's files are ~200 MB; what the guest wrote is a few MB.
    assert(info.usedBytes > 100 * 1048576, JSON.stringify(info));
    assert(info.uniqueBytes < info.usedBytes / 4, JSON.stringify(info));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run --rootfs: a plain ext4 with nothing of shuru's, booted with --kernel of a bzImage", async () => {
  await using home = await TestHome.create();
  const dir = await Deno.makeTempDir({ prefix: "shuru-rootfs-" });
  try {
    const tree = join(dir, "tree");
    await Deno.mkdir(join(tree, "bin"), { recursive: true });
    const busybox = (await runTool("sh", ["-c", "command -v busybox"])).trim();
    await Deno.copyFile(busybox, join(tree, "bin", "busybox"));
    await Deno.symlink("busybox", join(tree, "bin", "sh"));
    await Deno.writeTextFile(join(tree, "marker"), "the user's own root\n");
    const rootfs = join(dir, "root.ext4");
    await runTool("mkfs.ext4", ["-q", "-d", tree, rootfs, "64M"]);
    const before = await Deno.readFile(rootfs);
    const kernel = (await findHostKernel()).vmlinuz;
    const r = ok(
      await home.run([
        "run",
        "--rootfs",
        rootfs,
        "--kernel",
        kernel,
        "--disk-size",
        "256",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "cat /marker; echo data > /written; /bin/busybox df -k / | /bin/busybox tail -1",
      ]),
      "run --rootfs",
    );
    assert(r.stdout.includes("the user's own root"), r.stdout);
    // The filesystem grew from 64 MiB to the 256 MiB disk (the tools disk's resize2fs).
    const kib = Number(r.stdout.trim().split("\n").pop()!.trim().split(/\s+/)[1]);
    assert(kib > 200 * 1024, r.stdout);
    // The user's file is never written.
    assertEquals(await Deno.readFile(rootfs), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--kernel, --initrd, --rootfs: a wrong file is one line before anything boots", async () => {
  await using home = await TestHome.create();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "text"), "hello\n");
    const cases: [string[], RegExp][] = [
      [["--kernel", join(dir, "text")], /as the kernel: it is neither a PVH ELF kernel/],
      [["--kernel", join(dir, "missing")], /as the kernel: no such file/],
      [["--initrd", join(dir, "text")], /as the initramfs: it is not a cpio archive/],
      [["--rootfs", join(dir, "text")], /as the root filesystem: it is not an ext4 image/],
      [["--rootfs", join(dir, "text"), "--image", "oci:/x"], /--image and --rootfs together/],
    ];
    for (const [flags, re] of cases) {
      const r = await home.run(["run", ...flags, "--", "true"]);
      assert(r.code !== 0, `${flags.join(" ")} was accepted`);
      const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("shuru: Cannot"));
      assertEquals(lines.length, 1, r.stderr);
      assert(re.test(lines[0]!), `${flags.join(" ")}: ${r.stderr}`);
    }
    // SHURU_KERNEL is the flag's default.
    const out = await new Deno.Command(shuruCommandLine()[0]!, {
      args: [...shuruCommandLine().slice(1), "run", "--", "true"],
      env: home.env({ SHURU_KERNEL: join(dir, "text") }),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(!out.success);
    assert(/as the kernel: it is neither/.test(new TextDecoder().decode(out.stderr)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
