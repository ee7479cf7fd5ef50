import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { kernelCmdline } from "./cmdline.ts";

Deno.test("kernelCmdline: console, panic power-off, TSC rate, module groups, probe", () => {
  const words = kernelCmdline({ tscKhz: 2445404, moduleGroups: ["base", "9p"] }).split(" ");
  for (
    const w of [
      "console=ttyS0",
      "panic=-1",
      "quiet",
      "tsc_early_khz=2445404",
      "shuru.modules=mmio,9p",
    ]
  ) {
    assert(words.includes(w), w);
  }
  assert(!words.includes("shuru.probe"));
  assert(kernelCmdline({ moduleGroups: [] }).split(" ").includes("shuru.modules=mmio"));
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
  // The transport's driver group follows: virtio_pci for VZ, virtio_mmio for QEMU's machines.
  const groups = { moduleGroups: ["virtiofs", "overlay"] };
  assert(
    kernelCmdline({ ...groups, console: "hvc0", pci: true }).includes(
      "shuru.modules=pci,virtiofs,overlay",
    ),
  );
  assert(kernelCmdline(groups).includes("shuru.modules=mmio,virtiofs,overlay"));
});

Deno.test("kernelCmdline: each machine's console and words; no TSC words for arm64", () => {
  const x86 = kernelCmdline({ arch: "x86_64", tscKhz: 2000000 }).split(" ");
  for (const w of ["console=ttyS0", "pci=off", "tsc=reliable", "tsc_early_khz=2000000"]) {
    assert(x86.includes(w), w);
  }
  const arm = kernelCmdline({ arch: "arm64", tscKhz: 2000000, moduleGroups: ["net"] }).split(" ");
  assert(arm.includes("console=ttyAMA0"), arm.join(" "));
  assert(arm.includes("shuru.modules=mmio,net"));
  for (const w of arm) assert(!/^(tsc|pci=|console=ttyS0)/.test(w), w);
});
