import { assertEquals } from "../tests/_assert.ts";
import { decodeKinfoProc, KINFO_PROC, kinfoProcMib } from "./process_darwin.ts";

/**
 * A `struct kinfo_proc` as macOS's sysctl returns it (LP64): bytes at the documented offsets,
 * every other byte non-zero so a wrong offset shows.
 */
function kinfoProc(fields: { sec: bigint; usec: number; stat: number; pid: number }): Uint8Array {
  const bytes = new Uint8Array(KINFO_PROC.SIZE).fill(0xa5);
  const view = new DataView(bytes.buffer);
  view.setBigInt64(0, fields.sec, true);
  view.setInt32(8, fields.usec, true);
  view.setInt8(36, fields.stat);
  view.setInt32(40, fields.pid, true);
  return bytes;
}

Deno.test("decodeKinfoProc - p_starttime as microseconds since the epoch", () => {
  const bytes = kinfoProc({ sec: 1_767_225_600n, usec: 123_456, stat: 2, pid: 4321 });
  assertEquals(decodeKinfoProc(bytes, 4321), 1_767_225_600_123_456);
  // A copy inside a larger buffer, at an offset, decodes the same.
  const padded = new Uint8Array(KINFO_PROC.SIZE + 16);
  padded.set(bytes, 16);
  assertEquals(decodeKinfoProc(padded.subarray(16), 4321), 1_767_225_600_123_456);
});

Deno.test("decodeKinfoProc - no process, a zombie, another pid or junk is undefined", () => {
  // sysctl answers a pid that does not exist with no bytes.
  assertEquals(decodeKinfoProc(new Uint8Array(0), 4321), undefined);
  const alive = { sec: 1_767_225_600n, usec: 5, stat: 3, pid: 4321 };
  assertEquals(decodeKinfoProc(kinfoProc(alive).subarray(0, 600), 4321), undefined);
  assertEquals(decodeKinfoProc(kinfoProc({ ...alive, stat: KINFO_PROC.SZOMB }), 4321), undefined);
  assertEquals(decodeKinfoProc(kinfoProc(alive), 4322), undefined);
  assertEquals(decodeKinfoProc(kinfoProc({ ...alive, sec: 0n }), 4321), undefined);
  assertEquals(decodeKinfoProc(kinfoProc({ ...alive, usec: 1_000_000 }), 4321), undefined);
});

Deno.test("kinfoProcMib - CTL_KERN, KERN_PROC, KERN_PROC_PID, pid", () => {
  assertEquals([...kinfoProcMib(77)], [1, 14, 1, 77]);
});
