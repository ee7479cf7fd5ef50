/**
 * The QMP client against a real QEMU (microvm, no kernel, started paused with -S): greeting,
 * commands with ids, QEMU's errors as typed QmpErrors, events, deadlines, and the end of the
 * connection when QEMU exits.
 */

import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { QmpClient, QmpError } from "../vm/mod.ts";
import { findCommand } from "../host/mod.ts";

async function startQemu(dir: string) {
  const qemu = findCommand("qemu-system-x86_64");
  assert(qemu, "qemu-system-x86_64 not found: apt-get install qemu-system-x86");
  const path = join(dir, "qmp.sock");
  const listener = Deno.listen({ transport: "unix", path });
  const child = new Deno.Command(qemu, {
    args: [
      "-M",
      "microvm",
      "-S",
      "-nodefaults",
      "-display",
      "none",
      "-chardev",
      `socket,id=mon,path=${path},server=off`,
      "-mon",
      "chardev=mon,mode=control",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => listener.close(), 20_000);
  try {
    const conn = await listener.accept();
    const qmp = await QmpClient.connect(conn, { signal: AbortSignal.timeout(20_000) });
    return { qmp, child };
  } finally {
    clearTimeout(timer);
    listener.close();
  }
}

Deno.test("QmpClient - a real QEMU: commands, typed errors, events, end of connection", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-qmp-" });
  const { qmp, child } = await startQemu(dir);
  try {
    assertEquals(qmp.version.major >= 7, true, JSON.stringify(qmp.version));
    const status = await qmp.execute<{ status: string; running: boolean }>("query-status");
    assertEquals(status.status, "prelaunch");
    assertEquals(status.running, false);

    // Concurrent commands are matched by id, not by order.
    const [a, b] = await Promise.all([
      qmp.execute<{ status: string }>("query-status"),
      qmp.execute<{ name?: string }>("query-name"),
    ]);
    assertEquals(a.status, "prelaunch");
    assertEquals(typeof b, "object");

    const err = await assertRejects(() => qmp.execute("no-such-command"));
    assert(err instanceof QmpError, String(err));
    assertEquals(err.code, "command_failed");
    assertEquals(err.errorClass, "CommandNotFound");
    assert(err.desc.includes("no-such-command"), err.desc);

    const bad = await assertRejects(() => qmp.execute("migrate-incoming", { uri: 42 }));
    assert(bad instanceof QmpError && bad.errorClass === "GenericError", String(bad));

    const resumed = qmp.waitForEvent("RESUME", { signal: AbortSignal.timeout(10_000) });
    await qmp.execute("cont");
    assertEquals((await resumed).event, "RESUME");

    const never = qmp.waitForEvent("NO_SUCH_EVENT", { signal: AbortSignal.timeout(200) });
    const aborted = await assertRejects(() => never);
    assert(aborted instanceof QmpError && aborted.code === "aborted", String(aborted));

    // QEMU exits: waiters and later commands fail with "closed"; `closed` resolves.
    const shutdown = qmp.waitForEvent("NEVER", { signal: AbortSignal.timeout(20_000) });
    await qmp.execute("quit");
    const gone = await assertRejects(() => shutdown);
    assert(gone instanceof QmpError && gone.code === "closed", String(gone));
    assertEquals(await qmp.closed, undefined);
    const late = await assertRejects(() => qmp.execute("query-status"));
    assert(late instanceof QmpError && late.code === "closed", String(late));
  } finally {
    await qmp.close();
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await child.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QmpClient - a peer that is not QMP is refused with a protocol error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-qmp-" });
  const path = join(dir, "fake.sock");
  const listener = Deno.listen({ transport: "unix", path });
  try {
    const serving = (async () => {
      const c = await listener.accept();
      await c.write(new TextEncoder().encode("SSH-2.0-OpenSSH\r\n"));
      c.close();
    })();
    const conn = await Deno.connect({ transport: "unix", path });
    const err = await assertRejects(() =>
      QmpClient.connect(conn, { signal: AbortSignal.timeout(5_000) })
    );
    assert(err instanceof QmpError && err.code === "protocol", String(err));
    await serving;
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});
