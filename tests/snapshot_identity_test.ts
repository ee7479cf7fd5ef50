/**
 * Every guest restored from one memory snapshot is unique: after the agent's set_identity
 * request, two restores read different bytes from /dev/urandom and getrandom(2), their clocks
 * are the host's (not the snapshot's), and they carry the names they were given.
 */

import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { type Guest, SnapshotLab } from "./_snapshot_guest.ts";

const dec = new TextDecoder();

/** What a restored guest reports right after its identity was set. */
interface Report {
  urandom: string;
  getrandom: string;
  guestSeconds: number;
  hostSeconds: number;
  hostname: string;
  machineId: string;
}

const PROBE = [
  "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo",
  "python3 -c 'import os; print(os.getrandom(32).hex())'",
  "date +%s.%N",
  "hostname",
  "cat /etc/machine-id 2>/dev/null || echo none",
].join("; ");

async function report(g: Guest): Promise<Report> {
  const r = await g.sandbox.exec(["sh", "-c", PROBE]);
  const hostSeconds = Date.now() / 1000;
  assertEquals(r.exitCode, 0, dec.decode(r.stderr));
  const [urandom, getrandom, date, hostname, machineId] = dec.decode(r.stdout).trim().split("\n");
  return {
    urandom: urandom!,
    getrandom: getrandom!,
    guestSeconds: Number(date),
    hostSeconds,
    hostname: hostname!,
    machineId: machineId!,
  };
}

Deno.test({
  name:
    "snapshots - two guests restored from one snapshot get fresh randomness, the host's clock, their own names",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // One vCPU: the kernel keeps one CRNG per CPU, so on one CPU two restores that were not
    // reseeded would return the very same bytes.
    await using lab = await SnapshotLab.create({ cpus: 1, memoryMiB: 1024 });
    const ram = join(lab.dir, "ram");
    const state = join(lab.dir, "state");
    {
      await using g = await lab.boot({ ramFile: ram });
      await g.connect();
      // Take the CRNG's periodic reseed now, so none is due right after the restores.
      await g.sandbox.exec(["sh", "-c", "head -c 64 /dev/urandom > /dev/null"]);
      await g.detach();
      await g.vm.pause();
      await g.device.save("snap");
      await g.vm.saveState(state);
    }
    // Restored "a while later": the guest clock still says the moment of the save.
    await new Promise((r) => setTimeout(r, 5_000));
    const reports: Report[] = [];
    const steps: number[] = [];
    for (const [i, id] of ["a", "b"].entries()) {
      await using g = await lab.restore({ ramFile: ram, stateFile: state }, {
        disk: { checkpoint: "snap" },
      });
      await g.vm.resume();
      await g.connect();
      const result = await g.sandbox.setIdentity({
        hostname: `clone-${id}`,
        machineId: `${i}`.repeat(32),
      });
      assertEquals(result.entropyBits, 512);
      steps.push(result.clockStepMs);
      reports.push(await report(g));
    }
    const [a, b] = reports as [Report, Report];
    assert(/^[0-9a-f]{64}$/.test(a.urandom) && /^[0-9a-f]{64}$/.test(a.getrandom), a.urandom);
    assert(a.urandom !== b.urandom, `both restores read ${a.urandom} from /dev/urandom`);
    assert(a.getrandom !== b.getrandom, `both restores read ${a.getrandom} from getrandom(2)`);
    for (const r of reports) {
      const skew = Math.abs(r.guestSeconds - r.hostSeconds);
      assert(skew < 2, `guest clock ${r.guestSeconds} is ${skew.toFixed(1)} s from the host's`);
    }
    for (const step of steps) assert(step > 4_000, `the clock moved only ${step} ms`);
    assertEquals([a.hostname, b.hostname], ["clone-a", "clone-b"]);
    assertEquals([a.machineId, b.machineId], ["0".repeat(32), "1".repeat(32)]);
  },
});
