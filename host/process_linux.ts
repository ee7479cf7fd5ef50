/**
 * Process start times on Linux: field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
 *
 * One read tells existence, the start time and whether the process is a zombie (which
 * `kill(pid, 0)` reports as alive), and works for other users' processes too (where
 * `kill(pid, 0)` fails with EPERM). This is the only module of the host side that reads `/proc`
 * (`portability_test.ts` holds the list).
 *
 * @module
 */

/** Returns the start time (field 22) from the text of `/proc/<pid>/stat`. */
export function parseStatStartTime(stat: string): number | undefined {
  // The command name (field 2) is in parentheses and may contain spaces and parentheses.
  const close = stat.lastIndexOf(")");
  if (close === -1) return undefined;
  const fields = stat.slice(close + 2).split(" ");
  // fields[0] is field 3 (state), so field 22 is fields[19].
  const value = Number(fields[19]);
  return Number.isInteger(value) ? value : undefined;
}

/** `true` when the text of `/proc/<pid>/stat` says the process is a zombie or dead. */
export function isStatDead(stat: string): boolean {
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state === "Z" || state === "X" || state === "x";
}

/** The start time of `pid` in clock ticks since boot; `undefined` when gone or a zombie. */
export async function linuxStartTime(pid: number): Promise<number | undefined> {
  let stat: string;
  try {
    stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  return isStatDead(stat) ? undefined : parseStatStartTime(stat);
}
