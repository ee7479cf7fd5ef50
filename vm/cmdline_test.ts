import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { kernelCmdline } from "./cmdline.ts";

Deno.test("kernelCmdline: console, panic power-off, TSC rate, module groups, probe", () => {
  const words = kernelCmdline({ tscKhz: 2445404, moduleGroups: ["base", "9p"] }).split(" ");
  for (
    const w of ["console=ttyS0", "panic=-1", "quiet", "tsc_early_khz=2445404", "shuru.modules=9p"]
  ) {
    assert(words.includes(w), w);
  }
  assert(!words.includes("shuru.probe"));
  assert(kernelCmdline({ moduleGroups: [] }).split(" ").includes("shuru.modules=none"));
  assert(!kernelCmdline().includes("shuru.modules"));
  assert(kernelCmdline({ probe: true }).split(" ").includes("shuru.probe"));
  assert(kernelCmdline({ verbose: true }).split(" ").includes("loglevel=7"));
  assertEquals(kernelCmdline({ extra: ["a=b"] }).split(" ").at(-1), "a=b");
  assertThrows(() => kernelCmdline({ tscKhz: 0 }), "tscKhz");
});

Deno.test("kernelCmdline: the VZ machine's console and PCI (VZ's validator accepts it)", () => {
  const qemu = kernelCmdline().split(" ");
  assert(qemu.includes("console=ttyS0") && qemu.includes("pci=off"));
  const vz = kernelCmdline({ console: "hvc0", pci: true }).split(" ");
  assert(vz.includes("console=hvc0"));
  assert(!vz.includes("pci=off") && !vz.includes("console=ttyS0"));
});
