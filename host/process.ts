/**
 * Process liveness that survives pid reuse: a process is named by its pid and its start time, so
 * a record naming a process that died is never mistaken for an unrelated process that later got
 * the same pid.
 *
 * The start time comes from the OS, each in its own unit (only ever compared on the same host):
 *
 * - Linux: field 22 of `/proc/<pid>/stat`, clock ticks since boot (`process_linux.ts`);
 * - macOS: `p_starttime` of `sysctl(KERN_PROC_PID)`'s `kinfo_proc`, microseconds since the
 *   epoch (`process_darwin.ts`).
 *
 * Either query is the existence check too (`kill(pid, 0)` would add nothing: it reports a zombie
 * as alive, and fails with EPERM for another user's process), and a zombie counts as gone: an
 * orphan's exit may never be reaped when PID 1 does not reap, as in containers.
 *
 * @module
 */

import { type HostOs, hostOs } from "../ffi/mod.ts";
import { HostError } from "./errors.ts";
import { darwinStartTime } from "./process_darwin.ts";
import { linuxStartTime } from "./process_linux.ts";

/** A process identity that survives pid reuse: pid plus its start time. */
export interface ProcessId {
  /** Process id. */
  pid: number;
  /** When it started, in the host OS's unit (see the module's description). */
  startTime: number;
}

/** How each OS tells a process's start time (`undefined`: no such process, or a zombie). */
export const START_TIME_READERS: Record<HostOs, (pid: number) => Promise<number | undefined>> = {
  linux: linuxStartTime,
  darwin: darwinStartTime,
};

/** Options of {@linkcode processStartTime}. */
export interface ProcessStartTimeOptions {
  /** The OS whose reader to use (default: this host's). */
  os?: string;
}

/**
 * The start time of process `pid`, or `undefined` when it does not exist or has exited.
 *
 * @throws {HostError} `unsupported_os` on an OS shuru does not run on.
 */
export async function processStartTime(
  pid: number,
  options: ProcessStartTimeOptions = {},
): Promise<number | undefined> {
  const os = options.os ?? Deno.build.os;
  const known = hostOs(os);
  if (!known) {
    throw new HostError(
      "unsupported_os",
      `Cannot tell whether process ${pid} runs: shuru does not know ${os} (Linux and macOS only)`,
    );
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return await START_TIME_READERS[known](pid);
}

/** Returns the identity of process `pid`, or `undefined` when it does not exist or has exited. */
export async function processId(pid: number): Promise<ProcessId | undefined> {
  const startTime = await processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

/** `true` when the process `id` still runs (same pid and start time). */
export async function processAlive(id: ProcessId): Promise<boolean> {
  return (await processStartTime(id.pid)) === id.startTime;
}

/**
 * The identity of this process.
 *
 * @throws {HostError} `unsupported_os` when the OS cannot tell (never on Linux or macOS).
 */
export async function selfProcessId(): Promise<ProcessId> {
  const self = await processId(Deno.pid);
  if (!self) {
    throw new HostError(
      "unsupported_os",
      `Cannot read the start time of this process (pid ${Deno.pid}) on ${Deno.build.os}`,
    );
  }
  return self;
}
