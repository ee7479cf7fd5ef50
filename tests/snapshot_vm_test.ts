/**
 * Memory snapshots at the VM level, on the real guest: boot with RAM in a file, pause, save the
 * machine state, restore new VMs from (RAM file, state file) with the RAM mapped private, and
 * the disk captured at the same pause.
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { SnapshotLab } from "./_snapshot_guest.ts";
import { captureChangedRam, VmError, writeRamFile } from "../vm/mod.ts";

const dec = new TextDecoder();

async function sh(
  guest: {
    sandbox: {
      exec(argv: string[]): Promise<{ stdout: Uint8Array; stderr: Uint8Array; exitCode: number }>;
    };
  },
  script: string,
): Promise<string> {
  const r = await guest.sandbox.exec(["sh", "-c", script]);
  assertEquals(r.exitCode, 0, `${script}: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

/** The probe file's first 4 bytes, read from the disk with O_DIRECT. */
const READ_PROBE = "dd if=/root/probe iflag=direct bs=4096 count=1 status=none | head -c 4";

async function mappingOf(pid: number, path: string): Promise<string> {
  const maps = await Deno.readTextFile(`/proc/${pid}/maps`);
  return maps.split("\n").find((l) => l.endsWith(path)) ?? "";
}

Deno.test({
  name:
    "snapshots - a guest saved at a ready agent restores twice from one RAM file; both agents answer",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using lab = await SnapshotLab.create({ cpus: 1, memoryMiB: 1024 });
    const ram = join(lab.dir, "ram");
    const state = join(lab.dir, "state");
    {
      await using g = await lab.boot({ ramFile: ram });
      await g.connect();
      // A file on tmpfs lives only in guest RAM: seeing it after a restore proves the RAM came back.
      await sh(g, "echo snapshot-marker > /dev/shm/marker");
      // A guest saved while its agent has a host would restore into a dead session.
      await g.vm.pause();
      const refused = await assertRejects(() => g.vm.saveState(state));
      assert(
        refused instanceof VmError && refused.message.includes("agent channel is connected"),
        String(refused),
      );
      await g.vm.resume();
      await g.detach();
      await g.vm.pause();
      await g.device.save("snap");
      const saved = await g.vm.saveState(state);
      assert(saved.stateBytes > 1000 && saved.stateBytes < 1024 * 1024, `${saved.stateBytes}`);
    }
    const a = await lab.restore({ ramFile: ram, stateFile: state }, {
      disk: { checkpoint: "snap" },
    });
    await using _a = a;
    const b = await lab.restore({ ramFile: ram, stateFile: state }, {
      disk: { checkpoint: "snap" },
    });
    await using _b = b;
    for (const g of [a, b]) {
      // Both map the one file copy-on-write.
      assert((await mappingOf(g.vm.pid, ram)).includes(" rw-p "), await mappingOf(g.vm.pid, ram));
      await g.vm.resume();
      await g.connect();
    }
    assertEquals(await sh(a, "cat /dev/shm/marker"), "snapshot-marker\n");
    assertEquals(await sh(b, "cat /dev/shm/marker"), "snapshot-marker\n");
    // Private mappings: what one writes, the other and the file never see.
    await sh(a, "echo only-a > /dev/shm/marker");
    assertEquals(await sh(b, "cat /dev/shm/marker"), "snapshot-marker\n");
  },
});

Deno.test({
  name:
    "snapshots - the restored guest sees the disk as it was at the pause, not as the source changed it later",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using lab = await SnapshotLab.create({ cpus: 1, memoryMiB: 1024 });
    const ram = join(lab.dir, "ram");
    const state = join(lab.dir, "state");
    {
      await using g = await lab.boot({ ramFile: ram });
      await g.connect();
      await g.detach();
      await g.vm.pause();
      await g.device.save("ready");
      await g.vm.saveState(state);
    }
    // The source of the second snapshot is a restored VM (RAM mapped private) that keeps
    // running after the save, like a live memory checkpoint.
    await using src = await lab.restore({ ramFile: ram, stateFile: state }, {
      disk: { checkpoint: "ready" },
    });
    await src.vm.resume();
    await src.connect();
    // A 4 KiB file written in place later: the source's change lands on the same disk block.
    await sh(
      src,
      "head -c 4096 /dev/zero | tr '\\0' b > /root/probe && sync && echo in-ram > /dev/shm/marker",
    );
    await src.detach();
    await src.vm.pause();
    // One pause: disk, device state and changed RAM describe the same instant.
    const disk = await src.device.snapshot();
    const state2 = join(lab.dir, "state2");
    await src.vm.saveState(state2);
    using guestRam = await src.vm.openRam().then((r) => ({ r, [Symbol.dispose]: () => r.close() }));
    const capture = await captureChangedRam(guestRam.r, {
      path: join(lab.dir, "capture"),
      blockSize: 64 * 1024,
    });
    assert(capture.copiedBlocks > 0, "the restored guest wrote no RAM?");
    await src.vm.resume();
    await disk.save("at-pause");
    const ram2 = join(lab.dir, "ram2");
    await writeRamFile(capture, { base: ram, out: ram2 });
    // The source goes on and changes the file on its disk.
    await src.connect();
    await sh(
      src,
      "printf after | dd of=/root/probe conv=notrunc status=none && sync && " +
        "echo 3 > /proc/sys/vm/drop_caches",
    );
    assertEquals(await sh(src, READ_PROBE), "afte");

    await using copy = await lab.restore({ ramFile: ram2, stateFile: state2 }, {
      disk: { checkpoint: "at-pause" },
    });
    await copy.vm.resume();
    await copy.connect();
    assertEquals(await sh(copy, "cat /dev/shm/marker"), "in-ram\n");
    // Read from the disk itself (O_DIRECT), not from the page cache the RAM brought back.
    assertEquals(await sh(copy, READ_PROBE), "bbbb");
  },
});
