/**
 * Process start times on macOS, which has no `/proc`: `sysctl(CTL_KERN, KERN_PROC,
 * KERN_PROC_PID, pid)` fills a `struct kinfo_proc` (`<sys/sysctl.h>`), as `ps` does. It works
 * for every user's processes and answers with no bytes for a pid that does not exist.
 *
 * The structure is read at fixed offsets (LP64, the same on arm64 and x86_64):
 *
 * | offset | field (`kp_proc`, a `struct extern_proc`)           |
 * | ------ | --------------------------------------------------- |
 * | 0      | `p_starttime.tv_sec` (`p_un`'s user-space member), int64 |
 * | 8      | `p_starttime.tv_usec`, int32                         |
 * | 36     | `p_stat`, char (`SZOMB` = 5: a zombie)               |
 * | 40     | `p_pid`, int32                                       |
 *
 * `sizeof(struct kinfo_proc)` is 648. The start time is kept as microseconds since the epoch.
 * {@linkcode decodeKinfoProc} is pure, so Linux tests it on bytes laid out like the structure.
 *
 * @module
 */

import { openLibrary } from "../ffi/mod.ts";

/** The parts of `struct kinfo_proc` shuru reads. */
export const KINFO_PROC = {
  /** `sizeof(struct kinfo_proc)` on LP64. */
  SIZE: 648,
  START_SEC: 0,
  START_USEC: 8,
  STAT: 36,
  PID: 40,
  /** `p_stat` of a zombie (`<sys/proc.h>`). */
  SZOMB: 5,
} as const;

/** `{CTL_KERN, KERN_PROC, KERN_PROC_PID, pid}`: the sysctl name of one process's `kinfo_proc`. */
export function kinfoProcMib(pid: number): Int32Array<ArrayBuffer> {
  return new Int32Array([1, 14, 1, pid]);
}

/**
 * The start time (microseconds since the epoch) in the `kinfo_proc` bytes sysctl returned for
 * `pid`, or `undefined` when there is no such process (no bytes), it is a zombie, or the bytes
 * are not its record.
 */
export function decodeKinfoProc(bytes: Uint8Array, pid: number): number | undefined {
  if (bytes.length < KINFO_PROC.SIZE) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt32(KINFO_PROC.PID, true) !== pid) return undefined;
  if (view.getInt8(KINFO_PROC.STAT) === KINFO_PROC.SZOMB) return undefined;
  const sec = view.getBigInt64(KINFO_PROC.START_SEC, true);
  const usec = view.getInt32(KINFO_PROC.START_USEC, true);
  if (sec <= 0n || usec < 0 || usec >= 1_000_000) return undefined;
  return Number(sec) * 1_000_000 + usec;
}

const SYMBOLS = {
  sysctl: {
    parameters: ["buffer", "u32", "buffer", "buffer", "pointer", "usize"],
    result: "i32",
  },
} as const;

let library: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;

/** The start time of `pid` (microseconds since the epoch); `undefined` when gone or a zombie. */
export function darwinStartTime(pid: number): Promise<number | undefined> {
  library ??= openLibrary("libc", SYMBOLS).symbols;
  const mib = kinfoProcMib(pid);
  const out = new Uint8Array(KINFO_PROC.SIZE);
  const length = new BigUint64Array([BigInt(out.length)]);
  const rc = library.sysctl(mib, mib.length, out, new Uint8Array(length.buffer), null, 0n);
  if (rc !== 0) return Promise.resolve(undefined);
  return Promise.resolve(decodeKinfoProc(out.subarray(0, Number(length[0])), pid));
}
