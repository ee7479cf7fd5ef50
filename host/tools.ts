/**
 * Host programs shuru needs, the Debian packages that provide them, and their installation.
 *
 * @module
 */

import { delimiter, join } from "node:path";
import type { GuestArch } from "./arch.ts";
import { HostError } from "./errors.ts";

/** A program shuru runs on the host. */
export interface HostTool {
  /** Program name looked up in PATH (and the sbin folders). */
  command: string;
  /** Debian package providing it. */
  package: string;
  /** Why shuru needs it (shown in messages). */
  purpose: string;
  /** `true` when the program must be statically linked (it runs inside the initramfs). */
  static?: boolean;
}

/** Tools `shuru init` needs to build the guest assets. */
export const ASSET_TOOLS: readonly HostTool[] = [
  { command: "mmdebstrap", package: "mmdebstrap", purpose: "builds the Debian root filesystem" },
  { command: "busybox", package: "busybox-static", purpose: "runs the initramfs", static: true },
  { command: "mkfs.ext4", package: "e2fsprogs", purpose: "writes the root filesystem image" },
  { command: "tini-static", package: "tini", purpose: "is PID 1 in the guest", static: true },
  { command: "setpriv", package: "util-linux", purpose: "runs an image's commands as its user" },
  { command: "resize2fs", package: "e2fsprogs", purpose: "grows the guest's filesystem" },
  { command: "xz", package: "xz-utils", purpose: "decompresses the kernel" },
  { command: "tar", package: "tar", purpose: "unpacks the Debian base" },
];

/** The QEMU system emulator of each guest architecture, and its Debian package. */
const QEMU_SYSTEM: Readonly<Record<GuestArch, { command: string; package: string }>> = {
  x86_64: { command: "qemu-system-x86_64", package: "qemu-system-x86" },
  arm64: { command: "qemu-system-aarch64", package: "qemu-system-arm" },
};

/** The QEMU program that runs guests of `arch`. */
export function qemuSystemTool(arch: GuestArch): HostTool {
  return { ...QEMU_SYSTEM[arch], purpose: `runs ${arch} virtual machines` };
}

/** Tools `shuru run` needs to boot a guest of `arch`. */
export function vmTools(arch: GuestArch): HostTool[] {
  return [qemuSystemTool(arch)];
}

/**
 * Tools a user who is not root needs besides {@linkcode ASSET_TOOLS}: the root filesystem is
 * built in a user namespace that maps the user's subordinate IDs (/etc/subuid, /etc/subgid).
 */
export const NON_ROOT_TOOLS: readonly HostTool[] = [
  {
    command: "newuidmap",
    package: "uidmap",
    purpose: "maps your subordinate IDs to build the root filesystem without root",
  },
];

/** Folders searched besides PATH (sbin is often missing from a user's PATH). */
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/** Returns the absolute path of `command` from `path` (a PATH value) and the sbin folders. */
export function findCommand(command: string, path = ""): string | undefined {
  for (const dir of [...path.split(delimiter).filter((d) => d !== ""), ...EXTRA_DIRS]) {
    const candidate = join(dir, command);
    try {
      const info = Deno.statSync(candidate);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** `true` when the ELF file at `path` has no program interpreter (statically linked). */
export async function isStaticElf(path: string): Promise<boolean> {
  using file = await Deno.open(path);
  const head = new Uint8Array(4096);
  const n = (await file.read(head)) ?? 0;
  if (n < 64 || head[0] !== 0x7f || head[1] !== 0x45 || head[4] !== 2) return false;
  const view = new DataView(head.buffer);
  const phoff = Number(view.getBigUint64(32, true));
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > n) return false;
    if (view.getUint32(at, true) === 3) return false; // PT_INTERP
  }
  return true;
}

/** A tool that is absent or unusable, with the reason. */
export interface MissingTool {
  /** The program that is missing or unusable. */
  tool: HostTool;
  /** Why it does not count as present. */
  reason: string;
}

/** Returns the tools of `tools` that are missing; `path` is the PATH to search. */
export async function findMissingTools(
  tools: readonly HostTool[],
  path: string,
): Promise<MissingTool[]> {
  const missing: MissingTool[] = [];
  for (const tool of tools) {
    const found = findCommand(tool.command, path);
    if (!found) {
      missing.push({ tool, reason: "not found" });
    } else if (tool.static && !(await isStaticElf(found))) {
      missing.push({ tool, reason: `${found} is not statically linked` });
    }
  }
  return missing;
}

/**
 * The command line that installs `packages` on Debian/Ubuntu: without recommended packages
 * (measured on a Debian 12 minbase: QEMU and the build tools are 64 packages, 527 MiB
 * installed, instead of 371 packages, 1309 MiB with recommends: GUI, audio and gstreamer
 * libraries shuru never loads), with `sudo` for a user who is not root.
 */
export function aptInstallLine(packages: readonly string[]): string {
  const sudo = Deno.uid() === 0 ? "" : "sudo ";
  return `${sudo}apt-get install -y --no-install-recommends ${[...new Set(packages)].join(" ")}`;
}

/** A Debian package the host lacks, and why shuru needs it (for messages). */
export interface MissingPackage {
  /** Debian package. */
  package: string;
  /** What is missing without it ("qemu-system-x86_64 (not found; runs the virtual machine)"). */
  what: string;
}

/** The missing tools as packages. */
export function packagesOf(missing: readonly MissingTool[]): MissingPackage[] {
  return missing.map((m) => ({
    package: m.tool.package,
    what: `${m.tool.command} (${m.reason}; ${m.tool.purpose})`,
  }));
}

/** The one error for everything missing, naming the one command that installs it all. */
export function missingPackagesError(missing: readonly MissingPackage[]): HostError {
  const packages = [...new Set(missing.map((m) => m.package))];
  return new HostError(
    "missing_host_tools",
    `Cannot build or boot guests: missing ${missing.map((m) => m.what).join(", ")}. ` +
      `Install with: ${aptInstallLine(packages)}` +
      (Deno.uid() === 0 ? " (or rerun with --install-deps)" : ""),
    { packages },
  );
}

/** The error for missing tools, naming the exact install command. */
export function missingToolsError(missing: readonly MissingTool[]): HostError {
  return missingPackagesError(packagesOf(missing));
}

/** Options of {@linkcode installPackages}. */
export interface InstallOptions {
  /** Called with a short progress line (and a fraction) as apt goes; apt's output goes to a log. */
  onProgress: (text: string, fraction?: number) => void;
}

/** Lines kept from a failed apt run's log for its error message. */
const APT_ERROR_LINES = 3;

/**
 * Whether a build installs the host packages it lacks: as asked (`--install-deps`,
 * `--no-install-deps`), else only as root (`uid` 0), so the first `shuru run` on a fresh machine
 * bootstraps itself and a user is told the one `sudo apt-get install` line instead.
 */
export function shouldInstallPackages(asked: boolean | undefined, uid: number | null): boolean {
  return asked ?? uid === 0;
}

/**
 * Installs Debian `packages` with apt-get (update, then install without recommends). Only as
 * root on a Debian-like system; otherwise throws {@linkcode HostError} `install_refused` naming
 * the command to run. apt's output goes to a log file (returned); progress is summarised as
 * "setting up N of M"; a failure names its `E:` lines and the log.
 */
export async function installPackages(
  packages: readonly string[],
  options: InstallOptions,
): Promise<string> {
  if (Deno.uid() !== 0) {
    throw new HostError(
      "install_refused",
      `Cannot install packages: not root. Run: ${aptInstallLine(packages)}`,
      { packages: [...packages] },
    );
  }
  if (!findCommand("apt-get", "")) {
    throw new HostError(
      "install_refused",
      `Cannot install packages: apt-get not found (not Debian/Ubuntu). Install: ${
        packages.join(" ")
      }`,
      { packages: [...packages] },
    );
  }
  const log = await Deno.makeTempFile({ prefix: "shuru-apt-", suffix: ".log" });
  using file = await Deno.open(log, { write: true, append: true });
  const encoder = new TextEncoder();
  const run = async (args: string[], onLine: (line: string) => void) => {
    file.writeSync(encoder.encode(`$ apt-get ${args.join(" ")}\n`));
    const child = new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errors: string[] = [];
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      let rest = "";
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        file.writeSync(encoder.encode(text));
        const lines = (rest + text).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) {
          if (/^(E|Err):/.test(line)) errors.push(line.trim());
          onLine(line);
        }
      }
    };
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    if (!status.success) {
      const why = errors.slice(-APT_ERROR_LINES).join(" ") || `exit status ${status.code}`;
      throw new HostError(
        "install_failed",
        `Cannot install packages: apt-get ${args[0]} failed: ${why} (its log: ${log})`,
        { packages: [...packages] },
      );
    }
  };
  options.onProgress("apt-get update");
  await run(["update"], () => {});
  let total = 0;
  let done = 0;
  await run(["install", "-y", "--no-install-recommends", ...new Set(packages)], (line) => {
    const planned = /(\d+) newly installed/.exec(line);
    if (planned) total = Number(planned[1]);
    const setup = /^Setting up ([^\s:]+)/.exec(line);
    if (setup) {
      done++;
      options.onProgress(
        `setting up ${setup[1]} (${done} of ${total || "?"})`,
        total > 0 ? Math.min(1, done / total) : undefined,
      );
    }
  });
  return log;
}
