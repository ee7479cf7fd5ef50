import { join } from "node:path";
import { assert, assertEquals } from "../tests/assert.ts";
import {
  createInstance,
  isAlive,
  isStatDead,
  parseStatStartTime,
  processId,
  pruneInstances,
  recordVmProcess,
  removeInstance,
} from "./instance.ts";

Deno.test("parseStatStartTime handles command names with spaces and parentheses", () => {
  const rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
  assertEquals(parseStatStartTime(`123 (qemu) ${rest}`), 424242);
  assertEquals(parseStatStartTime(`123 (a (b) c) ${rest}`), 424242);
  assertEquals(parseStatStartTime("garbage"), undefined);
});

Deno.test("isStatDead: zombies and dead processes count as gone", () => {
  const rest = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
  assert(isStatDead(`123 (deno) Z ${rest}`));
  assert(isStatDead(`123 (a) b) X ${rest}`));
  assert(!isStatDead(`123 (a) Z) S ${rest}`));
});

Deno.test("isAlive tells this process from a finished one and from pid reuse", async () => {
  const me = await processId(Deno.pid);
  assert(me && (await isAlive(me)));
  assert(!(await isAlive({ pid: Deno.pid, startTime: me.startTime + 1 })));
  const child = new Deno.Command("true").spawn();
  await child.status;
  assert(!(await isAlive({ pid: child.pid, startTime: 0 })));
});

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
