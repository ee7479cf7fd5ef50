import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { processId } from "../host/mod.ts";
import {
  claimName,
  listEntries,
  listLive,
  pruneRegistry,
  readRecord,
  recordPath,
  resolveSandbox,
  type SandboxRecord,
  updateRecord,
} from "./registry.ts";

function fields(name: string): Omit<SandboxRecord, "version" | "supervisor"> {
  return {
    name,
    state: "starting",
    instanceDir: `/nowhere/${name}`,
    controlSocket: `/nowhere/${name}/control.sock`,
    log: `/nowhere/${name}.log`,
    startedAt: new Date().toISOString(),
    cpus: 1,
    memoryMiB: 256,
    diskSizeMiB: 1024,
    from: null,
    ports: [],
    network: "none",
    idleTimeoutMs: null,
    timeoutMs: null,
  };
}

/** A record whose supervisor has exited (a finished child's pid and start time). */
async function deadRecord(dir: string, name: string): Promise<void> {
  const child = new Deno.Command("sleep", { args: ["0.2"] }).spawn();
  const id = await processId(child.pid);
  await child.status;
  assert(id, "child identity");
  const record: SandboxRecord = { version: 1, ...fields(name), supervisor: id };
  await Deno.writeTextFile(recordPath(dir, name), JSON.stringify(record));
}

Deno.test("registry: claim, update, names are exclusive among live supervisors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rec = await claimName(dir, fields("a"));
    assertEquals(rec.supervisor.pid, Deno.pid);
    assertEquals((await Deno.stat(recordPath(dir, "a"))).mode! & 0o777, 0o600);
    await assertRejects(() => claimName(dir, fields("a")), "a sandbox of that name is running");
    await updateRecord(dir, { ...rec, state: "running" });
    assertEquals((await readRecord(dir, "a"))?.state, "running");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry: stale records are dropped by listLive, prune and a new claim", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await deadRecord(dir, "ghost");
    await deadRecord(dir, "ghost2");
    await claimName(dir, fields("live"));
    assertEquals((await listEntries(dir)).map((e) => [e.record.name, e.alive]), [
      ["ghost", false],
      ["ghost2", false],
      ["live", true],
    ]);
    // A dead sandbox's name can be taken again.
    assertEquals((await claimName(dir, fields("ghost"))).supervisor.pid, Deno.pid);
    assertEquals(await pruneRegistry(dir), ["ghost2"]);
    assertEquals((await listLive(dir)).map((r) => r.name), ["ghost", "live"]);
    await Deno.writeTextFile(recordPath(dir, "junk"), "{not json");
    assertEquals((await listEntries(dir)).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry: resolveSandbox picks the only one, else lists them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assertRejects(() => resolveSandbox(dir), "none is running");
    await claimName(dir, fields("one"));
    assertEquals((await resolveSandbox(dir)).name, "one");
    await claimName(dir, fields("two"));
    await assertRejects(() => resolveSandbox(dir), "2 are running (one, two); name one");
    assertEquals((await resolveSandbox(dir, "two")).name, "two");
    await assertRejects(() => resolveSandbox(dir, "three"), "running sandboxes: one, two");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
