/**
 * How the QEMU process is confined: what a guest that escapes QEMU's device emulation finds on
 * the host. The guest is hostile (Firecracker's threat model), so QEMU runs with as little as
 * the host lets us take away without privileges of our own:
 *
 * - **QEMU's seccomp filter** ({@linkcode QEMU_SANDBOX_ARGS}): `obsolete=deny` (old system
 *   calls), `elevateprivileges=deny` (setuid, setgid, capset: no way back to more rights),
 *   `spawn=deny` (fork, clone of processes, execve: no shell), `resourcecontrol=deny` (scheduler,
 *   affinity, priorities). `/proc/PID/status` then reads `Seccomp: 2`. A consequence: QEMU can
 *   start no helper program, so `-incoming exec:`/`migrate exec:` cannot be used; migration
 *   streams go over a Unix socket or a passed file descriptor instead.
 * - **An empty environment**: nothing of ours (tokens, secrets in variables) is in
 *   `/proc/PID/environ`; every program on the chain is named by its absolute path.
 * - **Its own, empty network namespace** (only a `lo` that is down): QEMU talks to us only over
 *   Unix sockets (agent channel, NBD disk, network frames) whose paths live in the filesystem, so
 *   they keep working, while an escaped QEMU opens no TCP or UDP socket anywhere and reaches no
 *   abstract Unix socket of the host. As root: `unshare --net`; otherwise
 *   `unshare --user --map-current-user --net` where the kernel allows unprivileged user
 *   namespaces (QEMU keeps our uid and gains no capability outside its namespaces). When neither
 *   works, QEMU shares our network namespace and the summary says why.
 * - **No orphan**: `setpriv --pdeathsig SIGKILL` makes the kernel kill QEMU when its parent
 *   (us) dies for any reason, even SIGKILL.
 *
 * Each step exec's the next in place (`unshare` → `setpriv` → `qemu-system-*`), so the child's
 * pid is QEMU's own. The namespace probe runs once per process (one `unshare ... true`).
 *
 * @module
 */

import { findCommand } from "../assets/host_tools.ts";

/** QEMU's seccomp sandbox, every optional filter on. */
export const QEMU_SANDBOX_ARGS: readonly string[] = [
  "-sandbox",
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

/** Which network namespace the wrapped program gets. */
export type NetnsMode = "net" | "user+net" | "none";

/** A command line ready to spawn with an empty environment (`clearEnv: true`, no `env`). */
export interface ConfinedCommand {
  /** Absolute path of the first program. */
  program: string;
  /** Its arguments. */
  args: string[];
  /** One line naming each confinement that applies (for `shuru run -v`). */
  summary: string;
}

/** Options of {@linkcode confineQemu} and {@linkcode confineCommand}. */
export interface ConfineOptions {
  /** PATH to search for `unshare` and `setpriv` besides the standard folders. */
  path?: string;
  /**
   * The namespace to use; default: probed (`net` as root, `user+net` otherwise, the first that
   * works). Forcing a mode skips the probe (tests).
   */
  netns?: NetnsMode;
}

interface NetnsChoice {
  mode: NetnsMode;
  /** Why there is no namespace, when `mode` is `none`. */
  reason?: string;
}

const NETNS_FLAGS: Record<NetnsMode, string[]> = {
  "net": ["--net"],
  "user+net": ["--user", "--map-current-user", "--net"],
  "none": [],
};

const probes = new Map<string, Promise<NetnsChoice>>();

async function probeNetns(unshare: string, truePath: string): Promise<NetnsChoice> {
  const candidates: NetnsMode[] = Deno.uid() === 0 ? ["net", "user+net"] : ["user+net"];
  const failures: string[] = [];
  for (const mode of candidates) {
    try {
      const out = await new Deno.Command(unshare, {
        args: [...NETNS_FLAGS[mode], "--", truePath],
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      if (out.success) return { mode };
      const why = new TextDecoder().decode(out.stderr).trim().split("\n")[0] ?? "";
      failures.push(`unshare ${NETNS_FLAGS[mode].join(" ")}: ${why || `exit ${out.code}`}`);
    } catch (err) {
      failures.push(`unshare: ${(err as Error).message}`);
    }
  }
  return { mode: "none", reason: failures.join("; ") };
}

async function netnsChoice(options: ConfineOptions): Promise<NetnsChoice & { unshare?: string }> {
  const unshare = findCommand("unshare", options.path);
  if (options.netns !== undefined) {
    if (options.netns !== "none" && !unshare) {
      return { mode: "none", reason: "unshare not found (apt-get install util-linux)" };
    }
    return { mode: options.netns, ...(unshare ? { unshare } : {}) };
  }
  const truePath = findCommand("true", options.path);
  if (!unshare || !truePath) {
    return { mode: "none", reason: "unshare not found (apt-get install util-linux)" };
  }
  let probe = probes.get(unshare);
  if (!probe) {
    probe = probeNetns(unshare, truePath);
    probes.set(unshare, probe);
  }
  return { ...(await probe), unshare };
}

/**
 * Wraps `argv` (an absolute program path and its arguments) in the network namespace and the
 * parent-death signal; the result is spawned with an empty environment.
 */
export async function confineCommand(
  argv: readonly string[],
  options: ConfineOptions = {},
): Promise<ConfinedCommand> {
  const parts = ["empty environment"];
  const chain: string[] = [];
  const netns = await netnsChoice(options);
  if (netns.mode !== "none" && netns.unshare) {
    chain.push(netns.unshare, ...NETNS_FLAGS[netns.mode], "--");
    parts.push(
      netns.mode === "net"
        ? "own network namespace (unshare --net)"
        : "own network namespace in a user namespace (unshare --user --net)",
    );
  } else {
    parts.push(`no network namespace (${netns.reason ?? "disabled"})`);
  }
  const setpriv = findCommand("setpriv", options.path);
  if (setpriv) {
    chain.push(setpriv, "--pdeathsig", "SIGKILL", "--");
    parts.push("killed with its parent (setpriv --pdeathsig)");
  } else {
    parts.push("not killed with its parent (setpriv not found: apt-get install util-linux)");
  }
  chain.push(...argv);
  return { program: chain[0]!, args: chain.slice(1), summary: parts.join(", ") };
}

/**
 * The confined command line of QEMU: {@linkcode QEMU_SANDBOX_ARGS} added to `args`, then
 * {@linkcode confineCommand}.
 */
export async function confineQemu(
  qemu: string,
  args: readonly string[],
  options: ConfineOptions = {},
): Promise<ConfinedCommand> {
  const command = await confineCommand([qemu, ...QEMU_SANDBOX_ARGS, ...args], options);
  const filter = "seccomp filter (-sandbox: obsolete, elevateprivileges, spawn and " +
    "resourcecontrol denied)";
  return { ...command, summary: `QEMU confinement: ${filter}, ${command.summary}` };
}
