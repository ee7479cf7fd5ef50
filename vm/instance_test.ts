import { join } from "node:path";
import { assert, assertEquals } from "../tests/_assert.ts";
import { createInstance, pruneInstances, recordVmProcess, removeInstance } from "./instance.ts";

Deno.test("pruneInstances removes a dead owner's folder and kills its leftover VM", async () => {
  const root = await Deno.makeTempDir();
  const instancesDir = join(root, "instances");
  const sleeper = new Deno.Command("sleep", { args: ["60"] }).spawn();
  try {
    // A live instance (ours) stays.
    const mine = await createInstance(instancesDir);
    // A crashed run: owner is a process that has exited, its "VM" still runs.
    const dead = new Deno.Command("true").spawn();
    await dead.status;
    const crashed = await createInstance(instancesDir);
    const record = JSON.parse(await Deno.readTextFile(join(crashed.dir, "owner.json")));
    record.owner = { pid: dead.pid, startTime: 1 };
    await Deno.writeTextFile(join(crashed.dir, "owner.json"), JSON.stringify(record));
    await recordVmProcess(crashed, sleeper.pid);
    // recordVmProcess keeps the (dead) owner and adds the VM.
    const updated = JSON.parse(await Deno.readTextFile(join(crashed.dir, "owner.json")));
    assertEquals(updated.owner.pid, dead.pid);
    assertEquals(updated.vm.pid, sleeper.pid);

    const result = await pruneInstances(instancesDir);
    assertEquals(result.removed, [crashed.id]);
    assertEquals(result.killed, [sleeper.pid]);
    assertEquals(result.kept, [mine.id]);
    const status = await sleeper.status;
    assertEquals(status.signal, "SIGKILL");
    await Deno.stat(mine.dir);
    await removeInstance(mine);
    assertEquals(await Array.fromAsync(Deno.readDir(instancesDir)), []);
  } finally {
    try {
      sleeper.kill("SIGKILL");
    } catch { /* already killed */ }
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pruneInstances on a missing folder does nothing", async () => {
  const result = await pruneInstances("/nonexistent/shuru-instances");
  assertEquals(result, { removed: [], killed: [], kept: [] });
});

Deno.test("createInstance refuses paths too long for Unix sockets", async () => {
  const long = "/tmp/" + "x".repeat(120);
  let message = "";
  try {
    await createInstance(long);
  } catch (err) {
    message = (err as Error).message;
  }
  assert(message.includes("too long for Unix sockets"), message);
});
