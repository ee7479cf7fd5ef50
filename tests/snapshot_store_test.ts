/**
 * Memory checkpoints through the store, on the real guest: a ready guest saved as a memory
 * checkpoint (its RAM file handed to the store), restored from the verified RAM file; a restored
 * guest saved again while it keeps running (only the RAM it changed is copied and hashed), and
 * restored from that; a damaged chunk stops a restore before any guest runs.
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { type Guest, SnapshotLab } from "./_snapshot_guest.ts";
import { StoreError } from "../store/mod.ts";
import { captureChangedRam, machineMismatch } from "../vm/mod.ts";

const dec = new TextDecoder();
const BLOCK = 64 * 1024;

async function sh(g: Guest, script: string): Promise<string> {
  const r = await g.sandbox.exec(["sh", "-c", script]);
  assertEquals(r.exitCode, 0, `${script}: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

Deno.test({
  name:
    "memory checkpoints - save to the store, restore, save a restored guest live, restore again",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using lab = await SnapshotLab.create({ cpus: 1, memoryMiB: 1024 });
    const size = lab.memoryMiB * 1024 * 1024;
    const ram = join(lab.dir, "ram");
    const stateFile = join(lab.dir, "state");
    {
      await using g = await lab.boot({ ramFile: ram });
      await g.connect();
      await sh(g, "echo first > /dev/shm/marker");
      await g.detach();
      await g.vm.pause();
      const disk = await g.device.snapshot();
      await g.vm.saveState(stateFile);
      const saved = await disk.save("ready", {
        memory: {
          // The VM stops after this save, so its RAM file can become the image's cache.
          source: { size, file: ram, adoptFile: true },
          state: await Deno.readFile(stateFile),
          machine: { ...g.vm.describe() },
        },
      });
      assert(saved.memory!.usedBlocks > 100, JSON.stringify(saved.memory));
    }
    const ready = await lab.store.readMemory("ready");
    const readyFile = await lab.store.materializeMemory(ready);
    assertEquals(readyFile.written, false, "the adopted RAM file was not reused");
    await Deno.writeFile(stateFile, ready.state);

    await using b = await lab.restore({ ramFile: readyFile.path, stateFile }, {
      disk: { checkpoint: "ready" },
    });
    assertEquals(machineMismatch(ready.machine, b.vm.describe()), undefined);
    await b.vm.resume();
    await b.connect();
    await b.sandbox.setIdentity({ hostname: "b", machineId: "b".repeat(32) });
    assertEquals(await sh(b, "cat /dev/shm/marker"), "first\n");

    // Save b while it keeps running: one pause for disk, state and the RAM it changed.
    await sh(b, "echo second > /dev/shm/marker2");
    await b.detach();
    await b.vm.pause();
    const disk = await b.device.snapshot();
    const state2 = join(lab.dir, "state2");
    await b.vm.saveState(state2);
    const guestRam = await b.vm.openRam();
    let capture;
    try {
      capture = await captureChangedRam(guestRam, {
        path: join(lab.dir, "capture"),
        blockSize: BLOCK,
      });
    } finally {
      guestRam.close();
    }
    await b.vm.resume();
    const saved = await disk.save("second", {
      memory: {
        source: {
          size,
          file: readyFile.path,
          fileTable: ready.table,
          capture: { path: capture.path, blocks: capture.blocks },
        },
        state: await Deno.readFile(state2),
        machine: { ...b.vm.describe() },
      },
    });
    // Only what b changed was read and hashed.
    assertEquals(saved.memory!.hashedBlocks <= capture.copiedBlocks, true);
    assert(
      capture.copiedBlocks < saved.memory!.usedBlocks,
      `copied ${capture.copiedBlocks} of ${saved.memory!.usedBlocks} blocks`,
    );
    // b goes on after the save.
    await b.connect();
    assertEquals(await sh(b, "cat /dev/shm/marker2"), "second\n");

    const second = await lab.store.readMemory("second");
    const secondFile = await lab.store.materializeMemory(second);
    assert(secondFile.written);
    await Deno.writeFile(state2, second.state);
    {
      await using c = await lab.restore({ ramFile: secondFile.path, stateFile: state2 }, {
        disk: { checkpoint: "second" },
      });
      await c.vm.resume();
      await c.connect();
      await c.sandbox.setIdentity({ hostname: "c", machineId: "c".repeat(32) });
      assertEquals(
        await sh(c, "cat /dev/shm/marker /dev/shm/marker2; hostname"),
        "first\nsecond\nc\n",
      );
    }

    // A chunk only "second" has is damaged: its RAM file cannot be written again.
    let victim: Uint8Array | undefined;
    for (let i = 0; i < second.table.entryCount && !victim; i++) {
      const h = second.table.get(i);
      const r = ready.table.get(i);
      if (h && !(r && r.every((x, k) => x === h[k]))) victim = h;
    }
    assert(victim, "no chunk unique to the second image");
    const chunk = lab.store.chunks.pathOf(victim);
    const bytes = await Deno.readFile(chunk);
    bytes[0]! ^= 0xff;
    await Deno.chmod(chunk, 0o644);
    await Deno.writeFile(chunk, bytes);
    await Deno.chmod(secondFile.path, 0o644);
    await Deno.remove(secondFile.path);
    const err = await assertRejects(() => lab.store.materializeMemory(second));
    assert(err instanceof StoreError && err.code === "corrupt_chunk", String(err));
  },
});
