import { assertEquals, assertThrows } from "../tests/assert.ts";
import { ARCH_SPECS, archFromUname, GUEST_ARCHES, parseArch } from "./arch.ts";
import { MODULE_GROUPS, moduleGroupsFor } from "./modules.ts";

Deno.test("parseArch: the names people use; anything else named in one line", () => {
  for (const v of ["x86_64", "amd64", "X86_64"]) assertEquals(parseArch(v), "x86_64");
  for (const v of ["arm64", "aarch64"]) assertEquals(parseArch(v), "arm64");
  assertThrows(() => parseArch("riscv64"), "use x86_64 or arm64");
  assertEquals([archFromUname("x86_64"), archFromUname("aarch64")], ["x86_64", "arm64"]);
  assertThrows(() => archFromUname("s390x"), "s390x");
});

Deno.test("ARCH_SPECS: one entry per architecture, Debian and ELF names that match", () => {
  assertEquals(GUEST_ARCHES.map((a) => ARCH_SPECS[a].arch), [...GUEST_ARCHES]);
  assertEquals([ARCH_SPECS.x86_64.debian, ARCH_SPECS.arm64.debian], ["amd64", "arm64"]);
  assertEquals([ARCH_SPECS.x86_64.elfMachine, ARCH_SPECS.arm64.elfMachine], [0x3e, 0xb7]);
});

Deno.test("moduleGroupsFor: the virtio transport module follows the machine", () => {
  assertEquals(moduleGroupsFor("mmio"), MODULE_GROUPS);
  const pci = moduleGroupsFor("pci");
  assertEquals(pci.base.includes("virtio_pci"), true);
  assertEquals(pci.base.includes("virtio_mmio"), false);
  assertEquals(pci.net, MODULE_GROUPS.net);
});
