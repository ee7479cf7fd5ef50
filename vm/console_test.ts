import { assert, assertEquals } from "../tests/_assert.ts";
import { AGENT_START_MARKER, INITRAMFS_MARKER, POWER_OFF_MARKER } from "../proto/mod.ts";
import { BootConsole } from "./console.ts";
import { VmError } from "./errors.ts";
import type { VmExit } from "./types.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("BootConsole - lines across chunks, phases at the clock's time", () => {
  let now = 1000;
  const lines: string[] = [];
  const c = new BootConsole({ started: 1000, now: () => now, onLine: (l) => lines.push(l) });
  now = 1500;
  c.push(enc(`[    0.1] Linux version 6.1\r\n${INITRAMFS_MARKER} sta`));
  c.push(enc("rt 0.25\n"));
  now = 2000;
  c.push(enc(`${INITRAMFS_MARKER} root mounted\n${AGENT_START_MARKER}\npartial`));
  assertEquals(lines, [
    "[    0.1] Linux version 6.1",
    `${INITRAMFS_MARKER} start 0.25`,
    `${INITRAMFS_MARKER} root mounted`,
    AGENT_START_MARKER,
  ]);
  // The kernel phase is the initramfs time minus the guest's uptime then.
  assertEquals(c.phases, { initramfs: 500, kernel: 250, rootMounted: 1000, agentStart: 1000 });
  c.end();
  assertEquals(c.tail(2), `${AGENT_START_MARKER}\npartial`);
});

Deno.test("BootConsole - power-down and panic lines", () => {
  const c = new BootConsole({ started: 0 });
  c.push(enc("[   12.5] Kernel panic - not syncing: Attempted to kill init!\n"));
  c.push(enc("[   12.6] Kernel panic - again\n[   13.0] reboot: Power down\n"));
  assertEquals(c.panic, "Kernel panic - not syncing: Attempted to kill init!");
  assert(c.sawPowerDown);
  // On hvc0 the kernel's line never arrives: shuru's own marker counts, but only on its own line.
  const hvc = new BootConsole({ started: 0 });
  hvc.push(enc(`shuru-agent: ${POWER_OFF_MARKER}
`));
  assert(!hvc.sawPowerDown);
  hvc.push(enc(`${POWER_OFF_MARKER}
`));
  assert(hvc.sawPowerDown);
});

Deno.test("BootConsole - waitFor resolves on the marker, rejects when the VM ends first", async () => {
  const c = new BootConsole({ started: performance.now() });
  let end!: (exit: VmExit) => void;
  const exited = new Promise<VmExit>((resolve) => end = resolve);
  const agent = c.waitFor("agentStart", exited, "VZ");
  const mounted = c.waitFor("rootMounted", exited, "VZ");
  c.push(enc(`${AGENT_START_MARKER}\n`));
  assert((await agent) >= 0);
  c.push(enc("last words\n"));
  end({
    code: 1,
    signal: null,
    poweredOff: false,
    panic: "",
    consoleTail: c.tail(),
    stderr: "boom",
  });
  const err = await mounted.then(() => undefined, (e) => e);
  assert(err instanceof VmError && err.code === "boot_failed");
  assertEquals(
    err.message,
    `The VM ended (VZ status 1) before rootMounted. Console tail:\n${AGENT_START_MARKER}\n` +
      "last words\nVZ: boom",
  );
});
