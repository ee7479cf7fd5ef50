import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { AssetError } from "./errors.ts";
import {
  arm64Image,
  compareReleases,
  extractKernel,
  findAll,
  findHostKernel,
  inspectElf,
  isArm64Image,
  XZ_MAGIC,
} from "./kernel.ts";

/** A minimal x86-64 ELF with one PT_NOTE segment holding a Xen note of `noteType`. */
function fakeElf(noteType: number): Uint8Array {
  const elf = new Uint8Array(64 + 56 + 32);
  const v = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  v.setUint16(18, 0x3e, true); // EM_X86_64
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(54, 56, true); // e_phentsize
  v.setUint16(56, 1, true); // e_phnum
  v.setUint32(64, 4, true); // PT_NOTE
  v.setBigUint64(64 + 8, 120n, true); // p_offset
  v.setBigUint64(64 + 32, 20n, true); // p_filesz
  v.setUint32(120, 4, true); // namesz
  v.setUint32(124, 4, true); // descsz
  v.setUint32(128, noteType, true);
  elf.set([0x58, 0x65, 0x6e, 0], 132); // "Xen\0"
  return elf;
}

async function xz(data: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("xz", { args: ["-c"], stdin: "piped", stdout: "piped" }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  const out = await child.output();
  assert(out.success, "xz failed: apt-get install xz-utils");
  return out.stdout;
}

Deno.test("findAll finds every occurrence up to the limit", () => {
  const data = Uint8Array.of(1, 2, 1, 2, 3, 1, 2);
  assertEquals(findAll(data, Uint8Array.of(1, 2), 10), [0, 2, 5]);
  assertEquals(findAll(data, Uint8Array.of(1, 2), 2), [0, 2]);
  assertEquals(findAll(data, Uint8Array.of(9), 10), []);
});

Deno.test("inspectElf recognises the PVH note and rejects other files", () => {
  assertEquals(inspectElf(fakeElf(18)), { x86_64: true, pvh: true });
  assertEquals(inspectElf(fakeElf(17)), { x86_64: true, pvh: false });
  assertEquals(inspectElf(new Uint8Array(10)), { x86_64: false, pvh: false });
  const truncated = fakeElf(18).subarray(0, 100);
  assertEquals(inspectElf(truncated).pvh, false);
});

Deno.test("extractKernel skips a false xz magic and ignores trailing data", async () => {
  const elf = fakeElf(18);
  const payload = await xz(elf);
  const image = new Uint8Array([
    ...new Uint8Array(100).fill(7),
    ...XZ_MAGIC, // a false start: not a valid stream
    0,
    0,
    ...payload,
    ...new Uint8Array(50).fill(9), // what follows the payload in a bzImage
  ]);
  assertEquals(await extractKernel(image), elf);
});

Deno.test("extractKernel rejects a payload that is not a PVH kernel", async () => {
  const err = await assertRejects(() =>
    extractKernel(new Uint8Array([1, 2, 3, ...(new Uint8Array(0))]))
  );
  assert(err instanceof AssetError && err.code === "kernel_invalid");
  const noPvh = await xz(fakeElf(17));
  const err2 = await assertRejects(() => extractKernel(noPvh));
  assert(err2 instanceof AssetError && /not a PVH-bootable/.test(err2.message));
});

Deno.test("compareReleases orders kernel releases numerically", () => {
  const sorted = ["6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64"].sort(compareReleases);
  assertEquals(sorted, ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64"]);
});

Deno.test("the host's Debian kernel extracts to a PVH ELF", async () => {
  const kernel = await findHostKernel();
  const elf = await extractKernel(await Deno.readFile(kernel.vmlinuz));
  assertEquals(inspectElf(elf), { x86_64: true, pvh: true });
});

Deno.test("findHostKernel names the package to install when there is none", async () => {
  const empty = await Deno.makeTempDir();
  try {
    const err = await assertRejects(() => findHostKernel(empty, empty));
    assert(err instanceof AssetError && err.code === "kernel_not_found");
    assert(err.message.includes("apt-get install linux-image-amd64"));
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("arm64Image: accepts an Image (raw or gzip'd), refuses anything else", async () => {
  const image = new Uint8Array(4096);
  image.set([0x41, 0x52, 0x4d, 0x64], 0x38); // "ARM\x64"
  assert(isArm64Image(image));
  assertEquals(await arm64Image(image), image);
  const gz = await new Response(
    new Blob([image]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
  assertEquals(await arm64Image(gz), image);
  const err = await assertRejects(() => arm64Image(new Uint8Array(4096)), "not an arm64 Image");
  assert(err instanceof AssetError && err.code === "kernel_invalid");
});
