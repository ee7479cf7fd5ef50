/**
 * Running a foreign architecture's programs during the asset build: Deno for that architecture
 * from npm, and qemu-user for the programs the build has to execute (mmdebstrap's maintainer
 * scripts, the build-time run of the guest's Deno that fills its cache).
 *
 * mmdebstrap executes the foreign root filesystem's programs inside a chroot, which needs the
 * kernel's `binfmt_misc` to hand them to qemu-user. Two ways, preferred in this order:
 *
 * - the host has the handler registered (Debian's `qemu-user-static` registers it through
 *   `binfmt-support` or systemd-binfmt; CI runners usually have it): mmdebstrap runs as is;
 * - Linux 6.7 or later: a `binfmt_misc` instance private to a new user namespace (mapping every
 *   id to itself, so file owners stay exact) gets the handler from qemu-user-static's
 *   `/usr/lib/binfmt.d/<name>.conf`, and mmdebstrap runs inside it. Nothing on the host changes.
 *
 * Deno's own run needs neither: qemu-user runs it directly with the root filesystem as its
 * library prefix (`qemu-aarch64-static -L ROOT ROOT/usr/local/bin/deno ...`).
 *
 * @module
 */

import { join } from "node:path";
import type { ArchSpec } from "./arch.ts";
import { AssetError } from "./errors.ts";
import { findCommand, HostError } from "../host/mod.ts";
import { runTool, type RunToolOptions } from "./run.ts";

const BINFMT = "/proc/sys/fs/binfmt_misc";

/** Where the Deno binary for `spec`'s architecture, version `version`, is cached. */
export function foreignDenoPath(cacheDir: string, spec: ArchSpec, version: string): string {
  return join(cacheDir, `deno-${spec.arch}-${version}`, "deno");
}

/**
 * Returns the Deno binary of `version` for `spec`'s architecture, fetching npm's
 * `@deno/linux-<arch>-glibc` package (`npm pack`) into `cacheDir` the first time.
 *
 * @throws AssetError `download_failed` when npm cannot fetch it or it is not that
 *   architecture's binary.
 */
export async function foreignDeno(
  cacheDir: string,
  spec: ArchSpec,
  options: { version: string; onLine?: (line: string) => void },
): Promise<string> {
  const target = foreignDenoPath(cacheDir, spec, options.version);
  if (await Deno.stat(target).then((i) => i.isFile, () => false)) return target;
  const npm = findCommand("npm", Deno.env.get("PATH") ?? "");
  if (!npm) {
    throw new HostError(
      "missing_host_tools",
      `Cannot fetch Deno for ${spec.arch}: npm not found; install it with: apt-get install npm`,
      { packages: ["npm"] },
    );
  }
  await Deno.mkdir(cacheDir, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: cacheDir, prefix: `.deno-${spec.arch}-` });
  try {
    const spec_ = `${spec.denoNpmPackage}@${options.version}`;
    options.onLine?.(`npm pack ${spec_}`);
    let packed: Array<{ filename?: string }>;
    try {
      const out = await runTool(npm, ["pack", spec_, "--json", "--pack-destination", tmp], {
        cwd: tmp,
      });
      packed = JSON.parse(new TextDecoder().decode(out));
    } catch (err) {
      throw new AssetError(
        "download_failed",
        `Cannot fetch Deno for ${spec.arch}: npm pack ${spec_} failed: ${
          (err as Error).message.split("\n").slice(0, 3).join(" ")
        }`,
        { cause: err },
      );
    }
    const file = packed[0]?.filename;
    if (!file) throw new AssetError("download_failed", `Cannot fetch ${spec_}: npm named no file`);
    await runTool("tar", ["-xzf", join(tmp, file), "-C", tmp, "package/deno"]);
    const binary = join(tmp, "package", "deno");
    const machine = await elfMachine(binary);
    if (machine !== spec.elfMachine) {
      throw new AssetError(
        "download_failed",
        `Cannot use ${spec_}: its deno is not a ${spec.arch} ELF (e_machine ${machine})`,
      );
    }
    await Deno.chmod(binary, 0o755);
    await Deno.mkdir(join(target, ".."), { recursive: true });
    await Deno.rename(binary, target);
    return target;
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** The ELF `e_machine` of the file at `path` (`undefined` when it is not an ELF). */
export async function elfMachine(path: string): Promise<number | undefined> {
  using file = await Deno.open(path);
  const head = new Uint8Array(20);
  const n = (await file.read(head)) ?? 0;
  if (n < 20 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c || head[3] !== 0x46) {
    return undefined;
  }
  return new DataView(head.buffer).getUint16(18, head[5] === 1);
}

/** How the build runs `spec`'s programs in a chroot. */
export type ForeignExec =
  | { kind: "host-binfmt" }
  | { kind: "private-binfmt"; conf: string };

/** The qemu-user program for `spec` (from qemu-user-static), or a one-line problem. */
export function qemuUserProgram(spec: ArchSpec, path = ""): string {
  const found = findCommand(spec.qemuUser, path);
  if (!found) {
    throw new HostError(
      "missing_host_tools",
      `Cannot build ${spec.arch} guest assets on this host: ${spec.qemuUser} not found ` +
        "(it runs the foreign programs of the build); install it with: " +
        "apt-get install qemu-user-static",
      { packages: ["qemu-user-static"] },
    );
  }
  return found;
}

/** `true` when the host's `binfmt_misc` hands `spec`'s binaries to an enabled handler. */
export async function hostBinfmtEnabled(spec: ArchSpec): Promise<boolean> {
  try {
    const text = await Deno.readTextFile(join(BINFMT, spec.binfmtName));
    return /^enabled$/m.test(text);
  } catch {
    return false;
  }
}

/**
 * Decides how mmdebstrap can run `spec`'s maintainer scripts here.
 *
 * @throws HostError `missing_host_tools` saying what to install or enable.
 */
export async function foreignExec(spec: ArchSpec): Promise<ForeignExec> {
  if (await hostBinfmtEnabled(spec)) return { kind: "host-binfmt" };
  const conf = `/usr/lib/binfmt.d/${spec.binfmtName}.conf`;
  const hasConf = await Deno.stat(conf).then(() => true, () => false);
  if (hasConf && findCommand("unshare") && await privateBinfmtWorks()) {
    return { kind: "private-binfmt", conf };
  }
  throw new HostError(
    "missing_host_tools",
    `Cannot build the ${spec.arch} root filesystem: the kernel cannot run ${spec.arch} programs ` +
      `(no ${spec.binfmtName} handler in ${BINFMT}${
        hasConf ? ", and this kernel has no private binfmt_misc (Linux 6.7+)" : ""
      }). Install qemu-user-static and binfmt-support (apt-get install qemu-user-static ` +
      `binfmt-support; then update-binfmts --enable ${spec.binfmtName})`,
    { packages: ["qemu-user-static", "binfmt-support"] },
  );
}

/** `true` when a user namespace can mount its own `binfmt_misc` (Linux 6.7+). */
async function privateBinfmtWorks(): Promise<boolean> {
  const out = await new Deno.Command("unshare", {
    args: ["--user", "--map-root-user", "--mount", "mount", "-t", "binfmt_misc", "x", BINFMT],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => undefined);
  return out?.success ?? false;
}

/**
 * Runs `cmd args` so that it can execute `spec`'s programs (see {@linkcode foreignExec}); the
 * options are {@linkcode runTool}'s.
 */
export async function runWithForeignExec(
  exec: ForeignExec,
  argv: [string, ...string[]],
  options: RunToolOptions = {},
): Promise<Uint8Array> {
  if (exec.kind === "host-binfmt") return await runTool(argv[0], argv.slice(1), options);
  // A user namespace whose ids are the host's (root may map the whole range), its own mounts,
  // and its own pid namespace (mmdebstrap mounts /proc in the chroot). The shell waits for the
  // id maps, mounts a private binfmt_misc, registers qemu-user from its conf line, then execs.
  const script = [
    "read -r _ || exit 97",
    `mount -t binfmt_misc binfmt_misc ${BINFMT} || exit 98`,
    `cat "$0" > ${BINFMT}/register || exit 99`,
    'exec "$@"',
  ].join("\n");
  const own = await Deno.readLink("/proc/self/ns/user");
  return await runTool("unshare", [
    "--user",
    "--mount",
    "--pid",
    "--fork",
    "--propagation",
    "private",
    "sh",
    "-c",
    script,
    exec.conf,
    ...argv,
  ], {
    ...options,
    stdin: new TextEncoder().encode("go\n"),
    onSpawn: async (pid) => {
      // unshare(2) happens right after the spawn; wait (bounded) until it has.
      const deadline = performance.now() + 10_000;
      while ((await Deno.readLink(`/proc/${pid}/ns/user`)) === own) {
        if (performance.now() > deadline) {
          throw new AssetError("command_failed", "Cannot start mmdebstrap: unshare never ran");
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      await Deno.writeTextFile(`/proc/${pid}/uid_map`, "0 0 4294967295\n");
      await Deno.writeTextFile(`/proc/${pid}/gid_map`, "0 0 4294967295\n");
    },
  });
}
