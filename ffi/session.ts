/**
 * Finds a `setsid` program to start children in a session (and so a process group) of their own.
 *
 * Deno.Command has no setpgid/setsid option and forking from a multi-threaded runtime is unsafe,
 * so every child is started as `setsid [-c] PROG ARGS`: a child of Deno is never a group leader,
 * so `setsid` calls setsid(2) and execs PROG in place, keeping the pid Deno tracks (pid == pgid ==
 * sid). util-linux's `setsid` is used when present (Debian rootfs), else busybox's applet; both
 * take `-c` to make stdin the controlling terminal (TIOCSCTTY).
 *
 * @module
 */

/** A program that runs the rest of its argv in a new session. */
export interface SetsidLauncher {
  /** The executable to run. */
  readonly program: string;
  /** Arguments that come before `-c`/the target argv (e.g. `["setsid"]` for busybox). */
  readonly prefix: readonly string[];
}

const CANDIDATES: readonly SetsidLauncher[] = [
  { program: "/usr/bin/setsid", prefix: [] },
  { program: "/bin/setsid", prefix: [] },
  { program: "/usr/sbin/setsid", prefix: [] },
  { program: "/bin/busybox", prefix: ["setsid"] },
  { program: "/usr/bin/busybox", prefix: ["setsid"] },
];

let cached: SetsidLauncher | undefined;

/**
 * Returns the first `setsid` launcher found on this system.
 *
 * @throws Error when neither util-linux `setsid` nor busybox exists.
 */
export function setsidLauncher(): SetsidLauncher {
  if (cached) return cached;
  for (const candidate of CANDIDATES) {
    try {
      const info = Deno.statSync(candidate.program);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) {
        cached = candidate;
        return candidate;
      }
    } catch {
      // Not here; try the next one.
    }
  }
  throw new Error(
    "Cannot start processes in their own session: no setsid program found " +
      "(install util-linux or busybox)",
  );
}
