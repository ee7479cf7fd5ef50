/**
 * `shuru cp SRC DST`: copy files and folders between the host and a running sandbox, streamed
 * through the control protocol in chunks (any size). `NAME:/path` names a guest path; folders
 * travel as a tar stream (tar on both sides), like `docker cp`.
 *
 * What comes out of a guest is untrusted: files land on the host with their permission bits
 * less the umask and never setuid, setgid or sticky ({@linkcode hostModeOf}), owned by the
 * user running `shuru cp`, and a folder's device nodes are not created (the host tar runs with
 * `--no-same-owner --no-same-permissions` and, as root, without `CAP_MKNOD`).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { basename, dirname, join, posix } from "node:path";
import { findCommand } from "../assets/host_tools.ts";
import type { Sandbox } from "../mod.ts";
import { UserError } from "./errors.ts";
import { connectSandbox } from "./sandboxes.ts";

/** One side of a copy. */
export type CopyEndpoint = { kind: "host"; path: string } | {
  kind: "guest";
  sandbox: string;
  path: string;
};

/** Parses `NAME:/abs/path` (a guest path) or a host path. */
export function parseCopyEndpoint(text: string): CopyEndpoint {
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,47}):(.*)$/.exec(text);
  if (!m) return { kind: "host", path: text };
  if (!m[2]!.startsWith("/")) {
    throw new UserError(`Invalid guest path "${text}": write NAME:/absolute/path`);
  }
  return { kind: "guest", sandbox: m[1]!, path: m[2]! };
}

async function hostStat(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

async function guestStat(sb: Sandbox, path: string) {
  try {
    return await sb.fs.stat(path);
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Waits for a host tar whose stdout or stdin is being piped; fails with its stderr. */
async function checkedTar(proc: Deno.ChildProcess, what: string): Promise<void> {
  const [status, err] = await Promise.all([proc.status, new Response(proc.stderr).text()]);
  if (!status.success) {
    throw new UserError(`Cannot copy ${what}: tar failed on the host: ${err.trim()}`);
  }
}

/**
 * The host mode of a file copied out of a guest: its permission bits less the umask, never the
 * setuid, setgid or sticky bit (a guest could otherwise plant a setuid program on the host).
 */
export function hostModeOf(guestMode: number): number {
  return guestMode & 0o777 & ~Deno.umask();
}

/** tar's message for a device node it may not create (in the C locale). */
const MKNOD_REFUSED = /^tar: (.*): Cannot mknod: Operation not permitted$/;
const TAR_FAILED_AFTER = "tar: Exiting with failure status due to previous errors";

/**
 * Starts the host tar that unpacks a folder from the guest into `dir`: owned by us, modes less
 * the umask (no setuid, setgid or sticky bits) and, as root, without the capability to create
 * device nodes. Its messages are in the C locale, for {@linkcode checkedUntar}.
 */
function untarFromGuest(dir: string): Deno.ChildProcess {
  const tarArgs = ["-C", dir, "-xf", "-", "--no-same-owner", "--no-same-permissions"];
  let argv = ["tar", ...tarArgs];
  if (Deno.uid() === 0) {
    const setpriv = findCommand("setpriv");
    if (!setpriv) {
      throw new UserError(
        "Cannot copy a folder out of a sandbox as root without setpriv, which keeps the guest " +
          "from creating device nodes on the host; install it with: apt-get install util-linux",
      );
    }
    argv = [setpriv, "--inh-caps=-mknod", "--bounding-set=-mknod", "--", ...argv];
  }
  return new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: { LC_ALL: "C" },
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/**
 * Waits for {@linkcode untarFromGuest}'s tar; returns the device nodes it refused to create and
 * fails on any other error.
 */
async function checkedUntar(proc: Deno.ChildProcess, dir: string): Promise<string[]> {
  const [status, err] = await Promise.all([proc.status, new Response(proc.stderr).text()]);
  const lines = err.split("\n").filter((l) => l !== "");
  const devices = lines.flatMap((l) => MKNOD_REFUSED.exec(l)?.[1] ?? []);
  const other = lines.filter((l) => !MKNOD_REFUSED.test(l) && l !== TAR_FAILED_AFTER);
  if (!status.success && (devices.length === 0 || other.length > 0)) {
    throw new UserError(`Cannot copy ${dir}: tar failed on the host: ${err.trim()}`);
  }
  return devices;
}

async function hostToGuest(src: string, sb: Sandbox, dst: string): Promise<number> {
  const info = await hostStat(src);
  if (!info) throw new UserError(`Cannot copy ${src}: no such file or folder on the host`);
  const target = await guestStat(sb, dst);
  const into = target?.isDirectory || dst.endsWith("/");
  const dstPath = into ? posix.join(dst, basename(src)) : dst;
  if (info.isDirectory) {
    // A folder: tar on the host, untar in the guest, renaming the top folder to dstPath.
    const parent = posix.dirname(dstPath);
    await sb.fs.mkdir(dstPath, { recursive: true });
    const untar = await sb.spawn(["tar", "-C", dstPath, "-xf", "-"]);
    const tar = new Deno.Command("tar", {
      args: ["-C", src, "-cf", "-", "."],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errText = new Response(untar.stderr).text();
    void untar.stdout.cancel().catch(() => {});
    const [, status] = await Promise.all([
      tar.stdout.pipeTo(untar.stdin),
      untar.wait(),
      checkedTar(tar, src),
    ]);
    if (status.exitCode !== 0) {
      throw new UserError(
        `Cannot copy into ${parent}: tar in the guest: ${(await errText).trim()}`,
      );
    }
    return 0;
  }
  using file = await Deno.open(src, { read: true });
  await sb.fs.writeFile(dstPath, file.readable, { mode: (info.mode ?? 0o644) & 0o7777 });
  return info.size;
}

async function guestToHost(sb: Sandbox, src: string, dst: string): Promise<number> {
  const info = await guestStat(sb, src);
  if (!info) throw new UserError(`Cannot copy ${src}: no such file or folder in the guest`);
  const target = await hostStat(dst);
  const into = target?.isDirectory || dst.endsWith("/");
  const dstPath = into ? join(dst, posix.basename(src)) : dst;
  if (info.isDirectory) {
    await Deno.mkdir(dstPath, { recursive: true });
    const tar = await sb.spawn(["tar", "-C", src, "-cf", "-", "."]);
    const errText = new Response(tar.stderr).text();
    void tar.stdin.close().catch(() => {});
    const untar = untarFromGuest(dstPath);
    const [, status, devices] = await Promise.all([
      tar.stdout.pipeTo(untar.stdin),
      tar.wait(),
      checkedUntar(untar, dstPath),
    ]);
    if (status.exitCode !== 0) {
      throw new UserError(`Cannot copy ${src}: tar in the guest: ${(await errText).trim()}`);
    }
    if (devices.length > 0) {
      console.error(
        `shuru: cp: left out ${devices.length} device node(s) from the guest (never created ` +
          `on the host): ${devices.join(", ")}`,
      );
    }
    return 0;
  }
  await Deno.mkdir(dirname(dstPath), { recursive: true }).catch(() => {});
  const file = await Deno.open(dstPath, { write: true, create: true, truncate: true });
  await sb.fs.readFileStream(src).pipeTo(file.writable);
  await Deno.chmod(dstPath, hostModeOf(info.mode)).catch(() => {});
  return info.size;
}

/** Builds `shuru cp`. */
export function cpCommand(): Command {
  return new Command("cp")
    .description(
      "Copy a file or folder between the host and a running sandbox; NAME:/path is a path in\n" +
        "sandbox NAME. Streamed in chunks, any size; into an existing folder (or a path ending\n" +
        "in /) it keeps its name.\n" +
        "Examples: shuru cp ./data.csv dev:/work/   shuru cp dev:/work/out ./out",
    )
    .argument("<src>", "source: a host path or NAME:/guest/path")
    .argument("<dst>", "destination: a host path or NAME:/guest/path")
    .action(async (srcText, dstText) => {
      const src = parseCopyEndpoint(srcText);
      const dst = parseCopyEndpoint(dstText);
      if (src.kind === dst.kind) {
        throw new UserError(
          "Cannot copy: exactly one side must be a sandbox path (NAME:/path) and the other a " +
            "host path",
        );
      }
      const name = src.kind === "guest" ? src.sandbox : (dst as { sandbox: string }).sandbox;
      await using sb = await connectSandbox(name);
      try {
        if (src.kind === "host") await hostToGuest(src.path, sb, dst.path);
        else await guestToHost(sb, src.path, dst.path);
      } catch (err) {
        if (err instanceof UserError) throw err;
        throw new UserError(`Cannot copy ${srcText} to ${dstText}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }) as unknown as Command;
}
