/**
 * Real OCI images for the image tests, built with Debian's `umoci` (and copied around with
 * `skopeo`):
 *
 * - {@linkcode busyboxImage}: a static busybox and nothing else (no libc, no python), an `app`
 *   user, a second layer that deletes and replaces files (whiteouts), and a config with Env,
 *   WorkingDir, User, Cmd and an exposed port;
 * - {@linkcode debianPythonImage}: the Debian base `shuru init` caches (mmdebstrap's tarball,
 *   which has python3) as one layer.
 *
 * A missing tool fails the test with the apt-get line to install it.
 *
 * @module
 */

import { join } from "node:path";
import { homeLayout } from "../host/mod.ts";

/** Runs a program and returns its stdout; throws with its stderr when it fails. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      const pkg = { umoci: "umoci", skopeo: "skopeo", busybox: "busybox-static" }[cmd] ?? cmd;
      throw new Error(`${cmd} is required for this test: apt-get install ${pkg}`);
    }
    throw err;
  }
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** The busybox applets the test image links. */
const APPLETS = ["sh", "ls", "cat", "id", "pwd", "env", "echo", "sleep", "wc", "stat", "touch"];

/** What the busybox image's config says (the tests check each). */
export const BUSYBOX_CONFIG = {
  env: "GREETING=hello from the image",
  workingDir: "/home/app",
  user: "app",
  uid: 1000,
  gid: 1000,
  exposed: "8080/tcp",
  /** Prints uid, gid, cwd, $GREETING, $HOME and which files the layers left. */
  cmd: [
    "/bin/sh",
    "-c",
    'echo "uid=$(id -u) gid=$(id -g) cwd=$(pwd) greeting=$GREETING home=$HOME"; ls /',
  ],
};

/**
 * Builds the busybox image in the OCI layout `<dir>` with tag `bb`; returns `oci:<dir>:bb`.
 * Layer 1: busybox, /etc/passwd and /etc/group with `app` (1000), `/home/app` (0700, app's),
 * `/gone`, `/opaque/old`, `/hard` and `/hard2` (hard links), an xattr. Layer 2: deletes `/gone`,
 * replaces `/opaque`, adds `/layer2`. `options.busybox` and `options.architecture` make an
 * image of another architecture (default: the host's busybox, umoci's default architecture).
 */
export async function busyboxImage(
  dir: string,
  options: { busybox?: string; architecture?: string } = {},
): Promise<string> {
  const busybox = options.busybox ??
    (await run("sh", ["-c", "command -v busybox"]).catch(() => "")).trim();
  if (!busybox) {
    throw new Error("busybox is required for this test: apt-get install busybox-static");
  }
  const layout = join(dir, "layout");
  const bundle = join(dir, "bundle");
  await run("umoci", ["init", "--layout", layout]);
  await run("umoci", ["new", "--image", `${layout}:bb`]);
  await run("umoci", ["unpack", "--image", `${layout}:bb`, bundle]);
  const root = join(bundle, "rootfs");
  await Deno.mkdir(join(root, "bin"), { recursive: true });
  await Deno.copyFile(busybox, join(root, "bin", "busybox"));
  await Deno.chmod(join(root, "bin", "busybox"), 0o755);
  for (const a of APPLETS) await Deno.symlink("busybox", join(root, "bin", a));
  await Deno.mkdir(join(root, "etc"));
  await Deno.writeTextFile(
    join(root, "etc", "passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
  );
  await Deno.writeTextFile(
    join(root, "etc", "group"),
    "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
  );
  await Deno.mkdir(join(root, "home", "app"), { recursive: true });
  await Deno.writeTextFile(join(root, "home", "app", "notes"), "mine\n");
  await run("chown", ["-R", "1000:1000", join(root, "home", "app")]);
  await Deno.chmod(join(root, "home", "app"), 0o700);
  await Deno.writeTextFile(join(root, "gone"), "deleted by layer 2\n");
  await Deno.mkdir(join(root, "opaque"));
  await Deno.writeTextFile(join(root, "opaque", "old"), "replaced by layer 2\n");
  await Deno.writeTextFile(join(root, "hard"), "one inode, two names\n");
  await Deno.link(join(root, "hard"), join(root, "hard2"));
  await run("setfattr", ["-n", "user.shuru", "-v", "kept", join(root, "hard")]).catch(() => {
    throw new Error("setfattr is required for this test: apt-get install attr");
  });
  await run("umoci", ["repack", "--image", `${layout}:bb`, bundle]);
  // A fresh unpack: umoci diffs a repack against the tree its unpack recorded.
  await Deno.remove(bundle, { recursive: true });
  await run("umoci", ["unpack", "--image", `${layout}:bb`, bundle]);
  await Deno.remove(join(root, "gone"));
  await Deno.remove(join(root, "opaque"), { recursive: true });
  await Deno.mkdir(join(root, "opaque"));
  await Deno.writeTextFile(join(root, "opaque", "new"), "from layer 2\n");
  await Deno.writeTextFile(join(root, "layer2"), "added by layer 2\n");
  await run("umoci", ["repack", "--image", `${layout}:bb`, bundle]);
  const c = BUSYBOX_CONFIG;
  await run("umoci", [
    "config",
    "--image",
    `${layout}:bb`,
    `--config.env=${c.env}`,
    `--config.workingdir=${c.workingDir}`,
    `--config.user=${c.user}`,
    `--config.exposedports=${c.exposed}`,
    ...c.cmd.map((a) => `--config.cmd=${a}`),
    ...(options.architecture ? [`--architecture=${options.architecture}`] : []),
  ]);
  await Deno.remove(bundle, { recursive: true });
  return `oci:${layout}:bb`;
}

/** The Debian base tarball `shuru init` cached (mmdebstrap; has python3). */
export async function debianTarball(): Promise<string> {
  const cache = join(homeLayout().assets, "cache");
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(cache)) {
      if (/^debian-bookworm-[0-9a-f]+\.tar$/.test(e.name)) names.push(e.name);
    }
  } catch {
    // reported below
  }
  if (names.length === 0) {
    throw new Error(
      `no Debian base tarball in ${cache}: build the guest assets first (./shuru init)`,
    );
  }
  return join(cache, names.sort()[0]!);
}

/**
 * Builds an image of the Debian base (python3 included) in the OCI layout `<dir>` with tag
 * `py`; returns `oci:<dir>:py`. Cmd `python3`, exposed 8000/tcp, PIP_NO_INPUT set.
 */
export async function debianPythonImage(dir: string): Promise<string> {
  const layout = join(dir, "layout");
  await run("umoci", ["init", "--layout", layout]);
  await run("umoci", ["new", "--image", `${layout}:py`]);
  await run("umoci", ["raw", "add-layer", "--image", `${layout}:py`, await debianTarball()]);
  await run("umoci", [
    "config",
    "--image",
    `${layout}:py`,
    "--config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--config.env=PIP_NO_INPUT=1",
    "--config.workingdir=/srv",
    "--config.exposedports=8000/tcp",
    "--config.cmd=python3",
  ]);
  return `oci:${layout}:py`;
}

/** `skopeo copy` (no TLS verification: the test registries are plain HTTP on loopback). */
export async function skopeoCopy(from: string, to: string): Promise<void> {
  await run("skopeo", [
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    "--src-tls-verify=false",
    from,
    to,
  ]);
}
