import { assertEquals } from "../tests/_assert.ts";
import { verboseFigures } from "./_shuru.ts";

Deno.test("verboseFigures - the boot and guest phase lists, the command and the shutdown of -v", () => {
  const stderr = [
    "shuru: warm start (resumed the ready snapshot)",
    "shuru: boot phases (ms each): assets 31, ready 9, vmStarted 62, agentReady 363; total 480 ms",
    "shuru: guest phases (ms after QEMU start): initramfs 6056, kernel 2136, agentStart 9297",
    "shuru: command ran 459 ms",
    "shuru: shutdown 13 ms",
  ].join("\n");
  assertEquals(verboseFigures(stderr), {
    boot: { assets: 31, ready: 9, vmStarted: 62, agentReady: 363 },
    guest: { initramfs: 6056, kernel: 2136, agentStart: 9297 },
    exec: 459,
    shutdown: 13,
  });
  assertEquals(verboseFigures("shuru: command ran 5 ms"), { boot: {}, guest: {}, exec: 5 });
});
