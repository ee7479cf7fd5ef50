/**
 * arm64 guests on this x86_64 host, emulated (QEMU `virt` under TCG), end to end through the CLI.
 *
 * An arm64 boot costs several x86_64 ones, so the checks share three boots:
 * 1. `checkpoint create --arch arm64` inside a network namespace: the guest's architecture, a
 *    `--mount`ed host folder, `--allow-net` to a host server through our stack, a `-p` forward
 *    the host fetches from, the command's exit code, a file saved into the checkpoint (whose
 *    manifest records arm64); a mismatching `--arch` with `--from` is refused in one line.
 * 2. `start --from` that checkpoint without `--arch` (it boots arm64), `exec`, a PTY `shell`, a
 *    live `checkpoint save` (recorded as arm64 too), `stop`.
 * 3. `run --arch arm64 --image` of a busybox-only arm64 image: the guest boots through the arm64
 *    tools disk (the image has no libc, no agent), the command runs as the image's User (the
 *    tools disk's arm64 setpriv) with its Env and WorkingDir; the same image without
 *    `--arch arm64` is refused in one line before anything boots.
 *
 * The arm64 guest image must be built (`./shuru init --arch arm64`; run-tests does it).
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { requireTool, shuruCommandLine, TestHome } from "./_shuru.ts";
import { BlackholeNetns, describe, fields, HostServers } from "./_netns.ts";
import { LineReader } from "./_lines.ts";
import { BUSYBOX_CONFIG, busyboxImage, run } from "./_images.ts";
import { ensureAssets } from "../assets/mod.ts";

/** Generous: an emulated arm64 guest under TCG on a busy 2-core machine. */
const BOOT_MS = 15 * 60_000;

/** `p`, or a rejection naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assertEquals(r.code, 0, `${what}: ${describe(r)}`);
  return r;
}

Deno.test("arm64 guests (emulated): checkpoint create with net, mount, -p; start --from, shell, live save; --image", async (t) => {
  await requireTool("curl", "curl");
  await requireTool("script", "bsdutils");
  await requireTool("qemu-system-aarch64", "qemu-system-arm");
  await using home = await TestHome.create();

  await t.step(
    "checkpoint create --arch arm64: net, mount, -p, exit code, saved file",
    async () => {
      await using ns = await BlackholeNetns.create();
      await using servers = await HostServers.start(ns, 1, { blobMiB: 4 });
      const port = servers.ports[0]!;
      const shared = join(home.dir, "shared");
      await Deno.mkdir(shared);
      await Deno.writeTextFile(join(shared, "hello.txt"), "from the host\n");
      const hostPort = 20000 + Math.floor(Math.random() * 20000);
      const script = [
        'echo "arch=$(uname -m)"',
        'echo "mounted=$(cat /work/hello.txt)"',
        `echo "hello=$(curl -sS --max-time 120 http://api.test:${port}/)"`,
        `curl -sS --max-time 600 -o /tmp/blob http://api.test:${port}/blob`,
        'echo "down=$(sha256sum < /tmp/blob | cut -c1-64)"',
        "echo arm64-was-here > /etc/shuru-arm64-marker",
        "cd /tmp && python3 -m http.server 8000 >/dev/null 2>&1 &",
        "echo serving",
        // The host answers through the shared folder once it fetched through the forward.
        "i=0; while [ ! -e /work/done ] && [ $i -lt 1200 ]; do sleep 0.5; i=$((i+1)); done",
        'echo "done=$(cat /work/done)"',
        "exit 7",
      ].join("\n");
      const argv = [
        ...ns.prefix(),
        ...shuruCommandLine(),
        "checkpoint",
        "create",
        "armbase",
        "--arch",
        "arm64",
        "--allow-net",
        "--add-host",
        "api.test:127.0.0.1",
        "--mount",
        `${shared}:/work:rw`,
        "--allow-host-writes",
        "-p",
        `${hostPort}:8000`,
        "--",
        "sh",
        "-c",
        script,
      ];
      const child = new Deno.Command(argv[0]!, {
        args: argv.slice(1),
        env: home.env(),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stderr = new Response(child.stderr).text();
      const lines = new LineReader(child.stdout);
      const seen: string[] = [];
      try {
        for (;;) {
          const line = await within(lines.next(), BOOT_MS, "the guest's output");
          if (line === null) throw new Error(`the run ended early:\n${seen.join("\n")}`);
          seen.push(line);
          if (line === "serving") break;
        }
        // The guest's http.server (python3 under emulation) takes a while to listen.
        let listing = "";
        const deadline = Date.now() + 300_000;
        while (!listing.includes("blob") && Date.now() < deadline) {
          const out = await new Deno.Command(ns.prefix()[0]!, {
            args: [
              ...ns.prefix().slice(1),
              "curl",
              "-sS",
              "--max-time",
              "20",
              `http://127.0.0.1:${hostPort}/`,
            ],
            stdout: "piped",
            stderr: "null",
          }).output();
          listing = new TextDecoder().decode(out.stdout);
          if (!listing.includes("blob")) await new Promise((r) => setTimeout(r, 1000));
        }
        assert(listing.includes("blob"), `no listing through -p ${hostPort}:8000: ${listing}`);
        await Deno.writeTextFile(join(shared, "done"), "ok\n");
        for (;;) {
          const line = await within(lines.next(), BOOT_MS, "the run's end");
          if (line === null) break;
          seen.push(line);
        }
      } catch (err) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        throw new Error(`${(err as Error).message}\nstderr:\n${await stderr}`);
      }
      const status = await child.status;
      const all = `exit ${status.code}\nstdout:\n${seen.join("\n")}\nstderr:\n${await stderr}`;
      assertEquals(status.code, 7, all);
      const f = fields(seen.join("\n"));
      assertEquals(f.arch, "aarch64", all);
      assertEquals(f.mounted, "from the host", all);
      assertEquals(f.hello, `hello from port ${port}`, all);
      assertEquals(f.down, servers.blobSha256, all);
      assertEquals(f.done, "ok", all);
      assert((await stderr).includes("by emulation"), `no emulation notice:\n${all}`);
      const info = JSON.parse(
        ok(await home.run(["checkpoint", "inspect", "armbase", "--json"]), "inspect").stdout,
      );
      assertEquals(info.arch, "arm64");
      // The disk holds arm64 programs: booting it as x86_64 is refused before anything starts.
      const wrong = await home.run(["run", "--from", "armbase", "--arch", "x86_64", "--", "true"]);
      assert(wrong.code !== 0, describe(wrong));
      assertEquals(wrong.stderr.trim().split("\n").length, 1, describe(wrong));
      assert(wrong.stderr.includes("Cannot boot checkpoint armbase as x86_64"), describe(wrong));
    },
  );

  await t.step("start --from (arm64 without --arch): exec, shell on a PTY, live save", async () => {
    try {
      const started = ok(
        await home.run(["start", "--from", "armbase", "--name", "arm", "--memory", "1024"]),
        "start",
      );
      assertEquals(started.stdout.trim(), "arm");
      const r = ok(
        await home.run(["exec", "arm", "--", "sh", "-c", "uname -m; cat /etc/shuru-arm64-marker"]),
        "exec",
      );
      assertEquals(r.stdout, "aarch64\narm64-was-here\n");
      const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
      const line = [...shuruCommandLine(), "shell", "arm"].map(quote).join(" ");
      const child = new Deno.Command("script", {
        args: ["-qec", line, "/dev/null"],
        env: home.env(),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = new Response(child.stdout).text();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("echo arch-$(uname -m); tty; exit 5\n"));
      const status = await within(child.status, BOOT_MS, "the PTY shell");
      await writer.close().catch(() => {});
      await child.stderr.cancel();
      const text = await out;
      assertEquals(status.code, 5, text);
      assert(text.includes("arch-aarch64") && /\/dev\/pts\/\d+/.test(text), text);
      ok(await home.run(["checkpoint", "save", "live", "--sandbox", "arm"]), "live save");
      const info = JSON.parse(
        ok(await home.run(["checkpoint", "inspect", "live", "--json"]), "inspect").stdout,
      );
      assertEquals([info.arch, info.parent], ["arm64", "armbase"]);
    } finally {
      await home.run(["stop", "arm"]);
    }
  });
  await t.step(
    "run --arch arm64 --image: a busybox-only arm64 image through the arm64 tools disk",
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "shuru-arm64-image-" });
      try {
        // The arm64 static busybox of the tools disk goes into the image (dumped with debugfs).
        const assetsDir = home.env().SHURU_ASSETS!;
        const arm = await ensureAssets({ assetsDir, arch: "arm64", checkOnly: true });
        assert(arm.present, "no arm64 assets: run ./shuru init --arch arm64");
        const busybox = join(dir, "busybox");
        await run("debugfs", ["-R", `dump /bin/busybox ${busybox}`, arm.tools]);
        const image = await busyboxImage(join(dir, "img"), { busybox, architecture: "arm64" });
        const r = ok(
          await home.run([
            "run",
            "--arch",
            "arm64",
            "--image",
            image,
            "--",
            "sh",
            "-c",
            'echo "arch=$(busybox uname -m)"; echo "uid=$(id -u)"; echo "cwd=$(pwd)"; ' +
            'echo "greeting=$GREETING"',
          ]),
          "run --image",
        );
        const f = fields(r.stdout);
        assertEquals(
          [f.arch, f.uid, f.cwd],
          ["aarch64", String(BUSYBOX_CONFIG.uid), BUSYBOX_CONFIG.workingDir],
          describe(r),
        );
        assertEquals(f.greeting, BUSYBOX_CONFIG.env.split("=")[1], describe(r));
        // The image's platform must be the guest's: an arm64 image on an x86_64 guest is refused.
        const wrong = await home.run(["run", "--arch", "x86_64", "--image", image, "--", "true"]);
        assert(wrong.code !== 0, describe(wrong));
        assertEquals(wrong.stderr.trim().split("\n").length, 1, describe(wrong));
        assert(
          /it is a linux\/arm64 image and the guest is linux\/amd64 \(boot it with --arch arm64\)/
            .test(wrong.stderr),
          describe(wrong),
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
});
