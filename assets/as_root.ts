/**
 * Runs the steps of the asset build that must set file owners (unpacking the Debian base,
 * writing the ext4 image from it, removing it) as root: as the real root, or, for a user who is
 * not root, as root of a user namespace that maps the user to 0 and their subordinate IDs
 * (/etc/subuid, /etc/subgid) to 1-65535 (`unshare --map-root-user --map-auto`, util-linux
 * 2.38, with newuidmap from the uidmap package). Inside it `tar` keeps every owner of the
 * Debian base and `mkfs.ext4 -d` writes the owners it sees, so the image holds the same owners
 * either way; only device nodes cannot be made there (the guest mounts devtmpfs over /dev).
 *
 * @module
 */

import { AssetError } from "./errors.ts";
import { runTool, type RunToolOptions } from "./run.ts";

/** How the build runs a command as root. */
export interface AsRoot {
  /** `true` for the real root; `false` for a user namespace. */
  readonly real: boolean;
  /** Runs `cmd args...` as root (see {@linkcode runTool}). */
  run(cmd: string, args: string[], options?: RunToolOptions): Promise<Uint8Array>;
}

const NAMESPACE = ["--map-root-user", "--map-auto", "--"];

/** Why a user namespace cannot be made, as one line with the fix. */
async function namespaceProblem(reason: string): Promise<string> {
  const user = Deno.env.get("USER") ?? String(Deno.uid());
  const listed = async (file: string) => {
    try {
      const text = await Deno.readTextFile(file);
      return text.split("\n").some((l) =>
        l.startsWith(`${user}:`) || l.startsWith(`${Deno.uid()}:`)
      );
    } catch {
      return false;
    }
  };
  if (!(await listed("/etc/subuid")) || !(await listed("/etc/subgid"))) {
    return `Cannot build the guest image as ${user} (not root): you have no subordinate IDs; ` +
      `add them with: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ` +
      `${user} (or build once as root: sudo shuru init)`;
  }
  return `Cannot build the guest image as ${user} (not root): cannot make a user namespace ` +
    `(${reason}); build once as root instead: sudo shuru init`;
}

/**
 * The way this process runs commands as root for the build: directly as root, else through a
 * user namespace, which is tried once here.
 *
 * @throws {AssetError} `no_user_namespace` naming the fix when neither works.
 */
export async function asRoot(): Promise<AsRoot> {
  if (Deno.uid() === 0) {
    return { real: true, run: (cmd, args, options) => runTool(cmd, args, options) };
  }
  try {
    await runTool("unshare", [...NAMESPACE, "true"]);
  } catch (err) {
    const reason = (err as Error).message.split("\n").slice(1).join(" ").trim() ||
      (err as Error).message;
    throw new AssetError("no_user_namespace", await namespaceProblem(reason), { cause: err });
  }
  return {
    real: false,
    run: (cmd, args, options) => runTool("unshare", [...NAMESPACE, cmd, ...args], options),
  };
}
