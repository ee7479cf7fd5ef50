/**
 * Host programs shuru needs, the Debian packages that provide them, and their installation.
 *
 * @module
 */

import { delimiter, join } from "node:path";
import { ARCH_SPECS, type GuestArch } from "./arch.ts";
import { AssetError } from "./errors.ts";

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
  { command: "xz", package: "xz-utils", purpose: "decompresses the kernel" },
  { command: "tar", package: "tar", purpose: "unpacks the Debian base" },
];

/** Tools `shuru run` needs to boot a guest of `arch`. */
export function vmTools(arch: GuestArch): HostTool[] {
  const qemu = ARCH_SPECS[arch].qemuSystem;
  return [{
    command: qemu.program,
    package: qemu.package,
    purpose: `runs ${arch} virtual machines`,
  }];
}

/** Tools `shuru run` needs to boot a guest of the host's architecture (x86_64 hosts). */
export const VM_TOOLS: readonly HostTool[] = vmTools("x86_64");

/** Extra tools a build for a foreign architecture needs (its packages are downloaded). */
export function foreignAssetTools(arch: GuestArch): HostTool[] {
  return [
    { command: "dpkg-deb", package: "dpkg", purpose: "unpacks the downloaded packages" },
    { command: "depmod", package: "kmod", purpose: "indexes the kernel's modules" },
    { command: "npm", package: "npm", purpose: `fetches Deno for ${arch}` },
    {
      command: ARCH_SPECS[arch].qemuUser,
      package: "qemu-user-static",
      purpose: `runs ${arch} programs while building`,
    },
  ];
}

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
  /** The tool. */
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

/** The command line that installs `packages` on Debian/Ubuntu. */
export function aptInstallLine(packages: readonly string[]): string {
  return `apt-get install -y ${[...new Set(packages)].join(" ")}`;
}

/** The error for missing tools, naming the exact install command. */
export function missingToolsError(missing: readonly MissingTool[]): AssetError {
  const packages = [...new Set(missing.map((m) => m.tool.package))];
  const what = missing.map((m) => `${m.tool.command} (${m.reason}; ${m.tool.purpose})`);
  return new AssetError(
    "missing_host_tools",
    `Cannot build or boot guests: missing ${what.join(", ")}. Install with: ` +
      `sudo ${aptInstallLine(packages)} (or rerun with --install-deps as root)`,
    { packages },
  );
}

/** Options of {@linkcode installPackages}. */
export interface InstallOptions {
  /** Called with each line apt prints, so the installation is visible. */
  onOutput: (line: string) => void;
}

/**
 * Installs Debian `packages` with apt-get (update, then install). Only as root on a
 * Debian-like system; otherwise throws {@linkcode AssetError} `install_refused`.
 */
export async function installPackages(
  packages: readonly string[],
  options: InstallOptions,
): Promise<void> {
  if (Deno.uid() !== 0) {
    throw new AssetError(
      "install_refused",
      `Cannot install packages: not root. Run: sudo ${aptInstallLine(packages)}`,
      { packages: [...packages] },
    );
  }
  if (!findCommand("apt-get", "")) {
    throw new AssetError(
      "install_refused",
      `Cannot install packages: apt-get not found (not Debian/Ubuntu). Install: ${
        packages.join(" ")
      }`,
      { packages: [...packages] },
    );
  }
  const run = async (args: string[]) => {
    options.onOutput(`$ apt-get ${args.join(" ")}`);
    const child = new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      let rest = "";
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) options.onOutput(line);
      }
      if (rest) options.onOutput(rest);
    };
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    if (!status.success) {
      throw new AssetError(
        "command_failed",
        `Cannot install packages: apt-get ${args[0]} exited with status ${status.code}`,
      );
    }
  };
  await run(["update"]);
  await run(["install", "-y", ...new Set(packages)]);
}
