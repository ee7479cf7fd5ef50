import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { archFromUname, GUEST_ARCHES, parseArch } from "../host/mod.ts";
import { ARCH_SPECS } from "./arch.ts";

Deno.test("parseArch: the names people use; anything else is not an architecture", () => {
  for (const v of ["x86_64", "amd64", "X86_64"]) assertEquals(parseArch(v), "x86_64");
  for (const v of ["arm64", "aarch64"]) assertEquals(parseArch(v), "arm64");
  assertEquals(parseArch("riscv64"), undefined);
  assertEquals([archFromUname("x86_64"), archFromUname("aarch64")], ["x86_64", "arm64"]);
  assertThrows(() => archFromUname("s390x"), "s390x");
});

Deno.test("ARCH_SPECS: one entry per architecture, Debian, loader and ELF names that match", () => {
  assertEquals(GUEST_ARCHES.map((a) => ARCH_SPECS[a].arch), [...GUEST_ARCHES]);
  assertEquals([ARCH_SPECS.x86_64.debian, ARCH_SPECS.arm64.debian], ["amd64", "arm64"]);
  assertEquals([ARCH_SPECS.x86_64.elfMachine, ARCH_SPECS.arm64.elfMachine], [0x3e, 0xb7]);
  for (const a of GUEST_ARCHES) {
    const { loader, triplet } = ARCH_SPECS[a];
    assertEquals(loader.startsWith("/lib"), true, loader);
    assertEquals(triplet.startsWith(a === "x86_64" ? "x86_64" : "aarch64"), true, triplet);
  }
});
