import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { AssetError } from "./errors.ts";
import { findHostKernel } from "./kernel.ts";
import {
  loadModules,
  MODULE_GROUPS,
  moduleName,
  parseBuiltin,
  parseModulesDep,
  resolveModules,
  stripModuleSignature,
} from "./modules.ts";

const DEP =
  `kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio_mmio.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
`;

Deno.test("moduleName strips folders and compression, dashes become underscores", () => {
  assertEquals(moduleName("kernel/arch/x86/crypto/crc32c-intel.ko.xz"), "crc32c_intel");
  assertEquals(moduleName("kernel/fs/ext4/ext4.ko"), "ext4");
  assertEquals(moduleName("kernel/fs/9p/9p.ko.zst"), "9p");
});

Deno.test("resolveModules puts dependencies first, once each", () => {
  const index = parseModulesDep(DEP);
  const order = resolveModules(index, ["virtio_mmio", "virtio_blk", "ext4", "crc32c-intel"]);
  assertEquals(order, [
    "kernel/drivers/virtio/virtio.ko.xz",
    "kernel/drivers/virtio/virtio_ring.ko.xz",
    "kernel/drivers/virtio/virtio_mmio.ko.xz",
    "kernel/drivers/block/virtio_blk.ko.xz",
    "kernel/lib/crc16.ko.xz",
    "kernel/fs/mbcache.ko.xz",
    "kernel/fs/jbd2/jbd2.ko.xz",
    "kernel/fs/ext4/ext4.ko.xz",
    "kernel/arch/x86/crypto/crc32c-intel.ko.xz",
  ]);
});

Deno.test("resolveModules skips built-in modules and rejects unknown ones", () => {
  const index = parseModulesDep(DEP);
  const builtin = parseBuiltin("kernel/net/packet/af_packet.ko\n");
  assertEquals(resolveModules(index, ["af_packet"], builtin), []);
  const err = assertThrows(() => resolveModules(index, ["nope"], builtin));
  assert(err instanceof AssetError && err.code === "module_not_found");
});

Deno.test("resolveModules reports a dependency cycle", () => {
  const index = parseModulesDep("a.ko: b.ko\nb.ko: a.ko\n");
  assertThrows(() => resolveModules(index, ["a"]), "cycle");
});

Deno.test("stripModuleSignature removes exactly the appended signature", () => {
  const body = new TextEncoder().encode("\x7fELF module body");
  const sig = new Uint8Array(37).fill(0xaa);
  const info = new Uint8Array(12);
  new DataView(info.buffer).setUint32(8, sig.length, false);
  const marker = new TextEncoder().encode("~Module signature appended~\n");
  const signed = new Uint8Array([...body, ...sig, ...info, ...marker]);
  assertEquals(stripModuleSignature(signed), body);
  assertEquals(stripModuleSignature(body), body);
  // A bogus length larger than the file leaves it unchanged.
  new DataView(info.buffer).setUint32(8, 1 << 30, false);
  const bogus = new Uint8Array([...body, ...info, ...marker]);
  assertEquals(stripModuleSignature(bogus), bogus);
});

Deno.test("every module group resolves on the host's kernel, modules unsigned ELF", async () => {
  const kernel = await findHostKernel();
  for (const [group, names] of Object.entries(MODULE_GROUPS)) {
    const mods = await loadModules(kernel.modulesDir, names);
    assert(group === "net" || mods.length >= names.length, `${group}: ${mods.length} modules`);
    for (const m of mods) {
      assertEquals(Array.from(m.data.subarray(0, 4)), [0x7f, 0x45, 0x4c, 0x46], m.name);
      const tail = new TextDecoder().decode(m.data.subarray(-28));
      assert(tail !== "~Module signature appended~\n", `${m.name} still signed`);
    }
  }
  const base = (await loadModules(kernel.modulesDir, MODULE_GROUPS.base)).map((m) => m.name);
  assert(base.indexOf("jbd2") < base.indexOf("ext4"));
  assert(base.indexOf("virtio") < base.indexOf("virtio_blk"));
  // Both transports, PCI with its helpers (VZ's devices are on PCI).
  const pci = (await loadModules(kernel.modulesDir, MODULE_GROUPS.pci)).map((m) => m.name);
  assertEquals(pci.at(-1), "virtio_pci");
  const fs = (await loadModules(kernel.modulesDir, MODULE_GROUPS.virtiofs)).map((m) => m.name);
  assertEquals(fs.slice(-2), ["fuse", "virtiofs"]);
});
