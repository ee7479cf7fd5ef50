/**
 * Saving and loading QEMU's machine state without the guest's RAM.
 *
 * Save: `xen-save-devices-state` (despite its name, plain QEMU code: `qemu_save_device_state`
 * writes every device's and CPU's state and skips the RAM; Xen uses it because Xen handles RAM
 * itself, and so do we). It works whatever the RAM is (anonymous, or a file mapped shared or
 * private) and takes milliseconds. The file is a migration stream without the configuration
 * section and without the `ram` section, so every VM runs with
 * `-global migration.send-configuration=off` (see `qemu_args.ts`).
 *
 * Load: the VM is started with `-S -incoming defer` and the RAM file mapped private; the state
 * goes in with `migrate-incoming` over a Unix socket in the instance folder (QEMU 7.2 has no
 * `file:` URI; a socket keeps the bytes in our hands without a shell command line). The stream
 * has no RAM section, so the guest's RAM is the file's bytes, loaded lazily by the host kernel
 * as the guest touches them.
 *
 * What was measured for this choice, and the alternatives, is in `docs/snapshots.md`.
 *
 * @module
 */

import { VmError } from "./errors.ts";
import { type QmpClient, QmpError, type QmpEvent } from "./qmp.ts";

/** Migration capabilities set before a load (`events`: completion arrives as an event). */
export const MIGRATION_CAPABILITIES = [{ capability: "events", state: true }] as const;

/** Largest machine state accepted (QEMU's for our machine is about 15 KiB). */
export const MAX_STATE_BYTES = 16 * 1024 * 1024;

/** The first bytes of a QEMU migration stream: magic "QEVM" and stream version 3. */
export const STATE_MAGIC = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);

const FINAL = new Set(["completed", "failed", "cancelled"]);

/** Options of {@linkcode saveDeviceState} and {@linkcode loadMachineState}. */
export interface MachineStateOptions {
  /** Unix socket path for the stream (in the instance folder, under 108 bytes). */
  socketPath: string;
  /** Gives up. */
  signal: AbortSignal;
  /** Resolves if QEMU exits meanwhile (fails the operation with QEMU's output). */
  exited: Promise<{ code: number; stderr: string }>;
  /**
   * Migration capabilities to set before loading (they must match the saving side's):
   * default {@linkcode MIGRATION_CAPABILITIES}, right for states from `saveDeviceState`.
   */
  capabilities?: readonly { capability: string; state: boolean }[];
}

async function migrationError(qmp: QmpClient, action: string, fallback: string): Promise<string> {
  try {
    const info = await qmp.execute<{ "error-desc"?: string }>("query-migrate", undefined, {
      signal: AbortSignal.timeout(5_000),
    });
    return info["error-desc"] ?? fallback;
  } catch {
    return `${fallback} (${action})`;
  }
}

function final(qmp: QmpClient, signal: AbortSignal): Promise<QmpEvent> {
  return qmp.waitForEvent("MIGRATION", {
    match: (d) => FINAL.has(String(d.status)),
    signal,
  });
}

/** Races `work` against QEMU exiting, turning an exit into a VmError with its stderr. */
async function whileRunning<T>(
  work: Promise<T>,
  exited: MachineStateOptions["exited"],
  action: string,
  code: "save_failed" | "restore_failed",
): Promise<T> {
  const died = exited.then((exit) => {
    throw new VmError(
      code,
      `Cannot ${action}: QEMU exited (status ${exit.code})${exit.stderr ? `: ${exit.stderr}` : ""}`,
    );
  });
  died.catch(() => {});
  return await Promise.race([work, died]);
}

/**
 * Writes the machine state (devices and CPUs, no RAM) of the paused VM to `stateFile`:
 * QEMU writes a temporary file next to it, which is synced and renamed into place.
 * Returns the state's size in bytes.
 *
 * @throws {VmError} `save_failed` with QEMU's reason.
 */
export async function saveDeviceState(
  qmp: QmpClient,
  stateFile: string,
  options: Omit<MachineStateOptions, "socketPath">,
): Promise<number> {
  const action = "save the VM state";
  const tmp = `${stateFile}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    const work = qmp.execute("xen-save-devices-state", { filename: tmp, live: false }, {
      signal: options.signal,
    });
    await whileRunning(work, options.exited, action, "save_failed");
    const file = await Deno.open(tmp, { read: true, write: true });
    let size: number;
    try {
      size = (await file.stat()).size;
      const head = new Uint8Array(STATE_MAGIC.length);
      const n = await file.read(head);
      if (n !== head.length || !head.every((b, i) => b === STATE_MAGIC[i])) {
        throw new VmError("save_failed", `Cannot ${action}: QEMU wrote no migration stream`);
      }
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, stateFile);
    return size;
  } catch (err) {
    throw wrap(err, action, "save_failed", options.signal);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/**
 * Loads `stateFile` into a VM started with `-incoming defer` and waits until QEMU has applied
 * it. The VM stays paused (it was started with `-S`).
 *
 * @throws {VmError} `restore_failed` with QEMU's reason (QEMU usually exits after a failed load).
 */
export async function loadMachineState(
  qmp: QmpClient,
  stateFile: string,
  options: MachineStateOptions,
): Promise<void> {
  const { signal, socketPath } = options;
  const action = "restore the VM state";
  await Deno.remove(socketPath).catch(() => {});
  let conn: Deno.Conn | undefined;
  const onAbort = () => {
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const work = (async () => {
      await qmp.execute("migrate-set-capabilities", {
        capabilities: options.capabilities ?? MIGRATION_CAPABILITIES,
      }, { signal });
      const done = final(qmp, signal);
      done.catch(() => {});
      // QEMU listens on the socket once the command returns.
      await qmp.execute("migrate-incoming", { uri: `unix:${socketPath}` }, { signal });
      conn = await Deno.connect({ transport: "unix", path: socketPath });
      using file = await Deno.open(stateFile, { read: true });
      const writer = conn.writable.getWriter();
      try {
        for await (const chunk of file.readable) await writer.write(chunk);
        await writer.close();
      } catch (err) {
        // QEMU stops reading when it rejects the stream; its own reason comes with the event.
        writer.releaseLock();
        if (
          !(err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset)
        ) {
          throw err;
        }
      }
      const event = await done;
      if (event.data.status !== "completed") {
        throw new VmError(
          "restore_failed",
          `Cannot ${action}: ${await migrationError(
            qmp,
            action,
            `migration ${event.data.status}`,
          )}`,
        );
      }
    })();
    await whileRunning(work, options.exited, action, "restore_failed");
  } catch (err) {
    throw wrap(err, action, "restore_failed", signal);
  } finally {
    signal.removeEventListener("abort", onAbort);
    try {
      conn?.close();
    } catch { /* closed */ }
    await Deno.remove(socketPath).catch(() => {});
  }
}

function wrap(
  err: unknown,
  action: string,
  code: "save_failed" | "restore_failed",
  signal: AbortSignal,
): VmError {
  if (err instanceof VmError) return err;
  if (signal.aborted) {
    return new VmError(code, `Cannot ${action}: gave up waiting for QEMU`, { cause: err });
  }
  if (err instanceof QmpError) {
    return new VmError(code, `Cannot ${action}: ${err.desc || err.message}`, { cause: err });
  }
  return new VmError(code, `Cannot ${action}: ${(err as Error).message}`, { cause: err });
}
