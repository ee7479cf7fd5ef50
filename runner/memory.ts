/**
 * A live memory checkpoint of a running sandbox: its disk, memory and device state taken at one
 * pause, while it goes on running (docs/snapshots.md, "Capturing one instant").
 *
 * 1. The agent session is detached (the agent's reply is its last frame; it waits for a new
 *    host), so a guest resumed from the checkpoint meets its new host cleanly. Kept processes go
 *    on; the host's view of them continues after step 5.
 * 2. The VM pauses: vCPUs stopped, block I/O drained and flushed to our NBD server.
 * 3. The disk device freezes its block map; the device state is written (milliseconds).
 * 4. The RAM pages the guest changed since its RAM file was mapped are copied from the QEMU
 *    process (the rest of the image is that file).
 * 5. The VM resumes and the agent connection continues over a new session. The pause ends here.
 * 6. Disk chunks, RAM chunks and the manifest are stored while the guest runs.
 *
 * @module
 */

import { join } from "node:path";
import type { AgentConnection } from "../agent/mod.ts";
import type { BlockTable, CowDevice, DeviceSnapshot, ImageMeta, SaveResult } from "../store/mod.ts";
import { captureChangedRam, type Instance, type RamCapture, type Vm } from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";

/** What {@linkcode saveMemoryCheckpoint} did. */
export interface MemorySaveResult {
  /** The store's side of the save (disk and memory). */
  saved: SaveResult;
  /** Milliseconds the VM was paused. */
  pauseMs: number;
  /** Milliseconds from the request to the checkpoint being written. */
  totalMs: number;
}

/** What {@linkcode saveMemoryCheckpoint} needs of a running sandbox. */
export interface MemorySaveParts {
  /** Checkpoint name (checked free by the caller). */
  name: string;
  /** The agent connection (detached and continued). */
  agent: AgentConnection;
  /** The VM. */
  vm: Vm;
  /** The disk device. */
  device: CowDevice;
  /** The instance folder (temporary files go there). */
  instance: Instance;
  /** The image the disk descends from, recorded in the manifest. */
  image?: ImageMeta;
  /** The RAM file the VM maps, and its table when the store already has its chunks. */
  ramBase: { file: string; table?: BlockTable };
}

/** Saves `parts` as a memory checkpoint; see the module doc. */
export async function saveMemoryCheckpoint(parts: MemorySaveParts): Promise<MemorySaveResult> {
  const { name, agent, vm, device, instance } = parts;
  const t0 = performance.now();
  const stateFile = join(instance.dir, `save-${crypto.randomUUID().slice(0, 8)}.state`);
  const captureFile = join(instance.dir, `save-${crypto.randomUUID().slice(0, 8)}.ram`);
  let snapshot: DeviceSnapshot | undefined;
  let capture: RamCapture | undefined;
  let pauseMs = 0;
  try {
    await agent.detach();
    let resumed = false;
    const tPause = performance.now();
    try {
      await vm.pause();
      snapshot = await device.snapshot();
      await vm.saveState(stateFile);
      const ram = await vm.openRam();
      try {
        capture = await captureChangedRam(ram, { path: captureFile, blockSize: device.blockSize });
      } finally {
        ram.close();
      }
      await vm.resume();
      resumed = true;
      pauseMs = performance.now() - tPause;
    } finally {
      if (!resumed) await vm.resume().catch(() => {});
      await agent.reattach(await vm.connectAgent());
    }
    const state = await Deno.readFile(stateFile);
    const saved = await snapshot.save(name, {
      memory: {
        source: {
          size: capture.blocks.length * capture.blockSize,
          file: parts.ramBase.file,
          ...(parts.ramBase.table ? { fileTable: parts.ramBase.table } : {}),
          capture: { path: capture.path, blocks: capture.blocks },
        },
        state,
        machine: vm.describe() as unknown as Record<string, unknown>,
      },
      ...(parts.image ? { image: parts.image } : {}),
    });
    snapshot = undefined;
    return { saved, pauseMs, totalMs: performance.now() - t0 };
  } catch (err) {
    if (err instanceof RunnerError) throw err;
    throw new RunnerError(
      "save_failed",
      `Cannot save checkpoint ${name} with memory: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    snapshot?.release();
    await Deno.remove(stateFile).catch(() => {});
    await Deno.remove(captureFile).catch(() => {});
  }
}
