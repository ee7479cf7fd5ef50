/**
 * Process liveness that survives pid reuse: a process is named by its pid and its start time
 * (field 22 of `/proc/<pid>/stat`, in clock ticks since boot), so a record naming a process that
 * died is never mistaken for an unrelated process that later got the same pid.
 *
 * One read of `/proc/<pid>/stat` tells existence (what `kill(pid, 0)` tells), the start time and
 * whether the process is a zombie (which `kill(pid, 0)` reports as alive), and works for other
 * users' processes too (where `kill(pid, 0)` fails with EPERM).
 *
 * @module
 */

/** A process identity that survives pid reuse: pid plus its start time in clock ticks. */
export interface ProcessId {
  /** Process id. */
  pid: number;
  /** Field 22 of `/proc/<pid>/stat`. */
  startTime: number;
}

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

/**
 * Returns the identity of process `pid`, or `undefined` when it does not exist or has exited
 * (a zombie: an orphan's exit may never be reaped when PID 1 does not reap, as in containers).
 */
export async function processId(pid: number): Promise<ProcessId | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    if (isStatDead(stat)) return undefined;
    const startTime = parseStatStartTime(stat);
    return startTime === undefined ? undefined : { pid, startTime };
  } catch {
    return undefined;
  }
}

/** `true` when the process `id` still runs (same pid and start time). */
export async function processAlive(id: ProcessId): Promise<boolean> {
  const now = await processId(id.pid);
  return now !== undefined && now.startTime === id.startTime;
}
