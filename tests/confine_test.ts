/**
 * The host outside the VM, with a hostile guest (real guests under TCG, the real CLI):
 * - QEMU runs confined: its seccomp sandbox, an empty environment, its own network namespace
 *   with only `lo`; `shuru run -v` names the confinement.
 * - Files from the guest never carry setuid, setgid or sticky bits onto the host, and no device
 *   node reaches the host: a `:rw` mount (QEMU's `mapped-xattr` model), `shuru cp` out of a
 *   sandbox (a file and a folder); a `:ro` mount refuses writes even when the guest remounts it.
 * - The data home is private: created 0700, an open one tightened with one notice.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { withDeadline } from "./_deadline.ts";
import { LineReader } from "./_lines.ts";
import {
  type CliResult,
  qemuProcessesMentioning,
  requireTool,
  shuruCommandLine,
  TestHome,
} from "./_shuru.ts";

await requireTool("qemu-system-x86_64", "qemu-system-x86");

const BOOT_MS = 240_000;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

function ok(r: CliResult, what: string): CliResult {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.lstat(path)).mode!;
}

function octal(mode: number): string {
  return mode.toString(8);
}

Deno.test("confinement - QEMU runs under seccomp, with an empty environment, in its own network namespace; run -v says so", async () => {
  await requireTool("nsenter", "util-linux");
  await requireTool("ip", "iproute2");
  await using home = await TestHome.create();
  const child = home.spawn(
    ["run", "-v", "--", "sh", "-c", "echo booted; read line; echo bye $line"],
    { stdin: "piped" },
  );
  const stderr = new Response(child.stderr).text();
  const lines = new LineReader(child.stdout);
  const stdin = child.stdin.getWriter();
  try {
    assertEquals(await withDeadline(lines.next(), BOOT_MS, "the guest's first line"), "booted");
    const pids = await qemuProcessesMentioning(home.dir);
    assertEquals(pids.length, 1, `one QEMU for this home: ${pids}`);
    const pid = pids[0]!;

    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    assertEquals(/^Seccomp:\s*(\d)$/m.exec(status)?.[1], "2", "QEMU runs under a seccomp filter");
    const cmdline = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    const sandbox = cmdline[cmdline.indexOf("-sandbox") + 1];
    assertEquals(
      sandbox,
      "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      cmdline.join(" "),
    );
    assertEquals(await Deno.readTextFile(`/proc/${pid}/environ`), "", "QEMU's environment");

    const theirs = await Deno.readLink(`/proc/${pid}/ns/net`);
    assert(theirs !== await Deno.readLink("/proc/self/ns/net"), "QEMU has its own netns");
    const links = await new Deno.Command("nsenter", {
      args: ["-t", String(pid), "-n", "ip", "-o", "link"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(links.stdout);
    assert(links.success, new TextDecoder().decode(links.stderr));
    const names = text.trim().split("\n").map((l) => l.split(": ")[1]);
    assertEquals(names, ["lo"], text);

    // The data home while a guest runs: private.
    for (const dir of ["", "/store", "/instances", "/sandboxes"]) {
      assertEquals(octal((await modeOf(home.dir + dir)) & 0o777), "700", `${home.dir}${dir}`);
    }

    await stdin.write(new TextEncoder().encode("go\n"));
    await stdin.close();
    assertEquals(await withDeadline(lines.next(), 60_000, "the guest's last line"), "bye go");
    const code = (await withDeadline(child.status, 60_000, "shuru run to exit")).code;
    const err = await stderr;
    assertEquals(code, 0, err);
    const line = err.split("\n").find((l) => l.startsWith("shuru: QEMU confinement: ")) ?? "";
    for (
      const part of [
        "seccomp filter (-sandbox: obsolete, elevateprivileges, spawn and resourcecontrol denied)",
        "empty environment",
        "own network namespace (unshare --net)",
        "killed with its parent (setpriv --pdeathsig)",
      ]
    ) {
      assert(line.includes(part), `run -v does not say "${part}":\n${err}`);
    }
  } finally {
    await stdin.close().catch(() => {});
    lines.release();
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});

Deno.test("confinement - a :rw mount cannot put a setuid file or a device node on the host; :ro refuses writes even remounted", async () => {
  await using home = await TestHome.create();
  const rw = await Deno.makeTempDir({ prefix: "shuru-rw-" });
  const ro = await Deno.makeTempDir({ prefix: "shuru-ro-" });
  try {
    await Deno.writeTextFile(join(rw, "plain"), "host file\n");
    await Deno.chmod(join(rw, "plain"), 0o644);
    await Deno.writeTextFile(join(ro, "in.txt"), "read only\n");
    // What a hostile guest (root) tries: special bits, device nodes, a rw remount of the
    // read-only share (tag shuru1: the second --mount) under its tmpfs overlay.
    const script = [
      "cp /bin/true /rw/su && chmod 6755 /rw/su && stat -c 'guest su %a' /rw/su",
      "chmod 4755 /rw/plain",
      "mkdir /rw/shared && chmod 3777 /rw/shared",
      "mknod /rw/blk b 7 0; mknod /rw/null c 1 3",
      "lower=$(awk '$1 == \"shuru1\" { print $2 }' /proc/mounts)",
      'echo "lower $lower"',
      'mount -o remount,rw "$lower" 2>&1',
      'if echo evil > "$lower/evil" 2>/dev/null; then echo "ro write ok"; else echo "ro write refused"; fi',
      'if touch "$lower/in.txt" 2>/dev/null; then echo "ro touch ok"; else echo "ro touch refused"; fi',
      "true",
    ].join("\n");
    const r = ok(
      await home.run([
        "run",
        "--allow-host-writes",
        "--mount",
        `${rw}:/rw:rw`,
        "--mount",
        `${ro}:/ro`,
        "--",
        "sh",
        "-c",
        script,
      ]),
      "run",
    );
    // The guest sees the modes it set (kept in xattrs) ...
    assert(r.stdout.includes("guest su 6755"), r.stdout);
    assert(/^lower \/\S+$/m.test(r.stdout), `the read-only share was not found:\n${r.stdout}`);
    // ... the host has plain files with no special bits.
    const special = 0o7000;
    for (const name of ["su", "plain", "shared", "blk", "null"]) {
      const mode = await modeOf(join(rw, name));
      assertEquals(octal(mode & special), "0", `${name} on the host: ${octal(mode)}`);
      const type = name === "shared" ? S_IFDIR : S_IFREG;
      assertEquals(octal(mode & S_IFMT), octal(type), `${name} on the host: ${octal(mode)}`);
    }
    assertEquals(octal((await modeOf(join(rw, "plain"))) & 0o777), "644");
    // QEMU refuses writes to a read-only share whatever the guest's mount says.
    assert(r.stdout.includes("ro write refused"), r.stdout);
    assert(r.stdout.includes("ro touch refused"), r.stdout);
    assertEquals((await Array.fromAsync(Deno.readDir(ro))).map((e) => e.name), ["in.txt"]);
    assertEquals(await Deno.readTextFile(join(ro, "in.txt")), "read only\n");
  } finally {
    await Deno.remove(rw, { recursive: true });
    await Deno.remove(ro, { recursive: true });
  }
});

Deno.test("confinement - shuru cp out of a sandbox drops setuid, setgid and sticky bits and device nodes", async () => {
  await requireTool("setpriv", "util-linux");
  await using home = await TestHome.create();
  let started = false;
  try {
    ok(await home.run(["start", "--name", "cpbox", "--memory", "512"]), "start");
    started = true;
    ok(
      await home.run([
        "exec",
        "cpbox",
        "--",
        "sh",
        "-c",
        "cp /bin/true /root/su && chmod 6755 /root/su && " +
        "mkdir -p /root/tree/sub && cp /bin/true /root/tree/su && chmod 4775 /root/tree/su && " +
        "chmod 3777 /root/tree/sub && chmod 1777 /root/tree && echo data > /root/tree/sub/f && " +
        "mknod /root/tree/blk b 7 0 && mknod /root/tree/null c 1 3",
      ]),
      "exec",
    );
    const umask = Deno.umask();
    const out = join(home.dir, "out");
    await Deno.mkdir(out);
    ok(await home.run(["cp", "cpbox:/root/su", join(out, "su")]), "cp file");
    assertEquals(octal((await modeOf(join(out, "su"))) & 0o7777), octal(0o755 & ~umask));

    const tree = ok(await home.run(["cp", "cpbox:/root/tree", join(out, "tree")]), "cp folder");
    assert(tree.stderr.includes("left out 2 device node(s)"), tree.stderr);
    const t = join(out, "tree");
    assertEquals(octal((await modeOf(t)) & 0o7777), octal(0o777 & ~umask));
    assertEquals(octal((await modeOf(join(t, "su"))) & 0o7777), octal(0o775 & ~umask));
    assertEquals(octal((await modeOf(join(t, "sub"))) & 0o7777), octal(0o777 & ~umask));
    assertEquals(await Deno.readTextFile(join(t, "sub", "f")), "data\n");
    const names = (await Array.fromAsync(Deno.readDir(t))).map((e) => e.name).sort();
    assertEquals(names, ["su", "sub"], "no device nodes on the host");
  } finally {
    if (started) await home.run(["stop", "cpbox"]);
  }
});

Deno.test("confinement - the data home is created 0700; an open one is tightened with one notice", async () => {
  await using tmp = await TestHome.create();
  const home = join(tmp.dir, "new");
  const listCheckpoints = async () => {
    const out = await new Deno.Command(shuruCommandLine()[0]!, {
      args: [...shuruCommandLine().slice(1), "checkpoint", "list"],
      env: tmp.env({ SHURU_HOME: home }),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert(out.success, stderr);
    return stderr;
  };
  assertEquals(await listCheckpoints(), "");
  for (const dir of ["", "/store", "/store/chunks", "/instances", "/sandboxes"]) {
    assertEquals(octal((await modeOf(home + dir)) & 0o777), "700", `${home}${dir}`);
  }
  // An existing home open to others (as earlier versions made it).
  for (const dir of ["", "/store", "/instances"]) await Deno.chmod(home + dir, 0o755);
  const notice = await listCheckpoints();
  assertEquals(notice.trim().split("\n").length, 1, notice);
  assert(notice.includes("private") && notice.includes(`${home} (was 0755)`), notice);
  for (const dir of ["", "/store", "/instances"]) {
    assertEquals(octal((await modeOf(home + dir)) & 0o777), "700", `${home}${dir}`);
  }
  assertEquals(await listCheckpoints(), "", "no notice once private");
});
