import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { AssetError } from "./errors.ts";
import { checkInitrd, checkKernel, checkRootfs } from "./boot_files.ts";
import { findHostKernel } from "./kernel.ts";

async function refused(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  const err = await assertRejects(fn);
  assert(err instanceof AssetError && err.code === "boot_file_invalid", `${err}`);
  assert(re.test(err.message), err.message);
  assert(!err.message.includes("\n"), err.message);
}

Deno.test("checkKernel - a bzImage is extracted once and cached; other files are refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const host = await findHostKernel();
    const cacheDir = `${dir}/kernels`;
    const elf = await checkKernel(host.vmlinuz, { cacheDir });
    assert(elf.startsWith(cacheDir) && elf.endsWith(".vmlinux"), elf);
    // The extracted ELF itself is accepted as is.
    assertEquals(await checkKernel(elf, { cacheDir }), elf);
    const again = await checkKernel(host.vmlinuz, { cacheDir });
    assertEquals(again, elf);
    await Deno.writeTextFile(`${dir}/text`, "not a kernel");
    await refused(
      () => checkKernel(`${dir}/text`, { cacheDir }),
      /neither a PVH ELF kernel .* nor a bzImage/,
    );
    await refused(() => checkKernel(`${dir}/missing`, { cacheDir }), /no such file/);
    await refused(
      () => checkKernel("/bin/true", { cacheDir }),
      /not an x86-64 kernel|without a PVH/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkKernel - an arm64 guest takes an Image, raw or gzip'd; an x86 kernel is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cacheDir = `${dir}/kernels`;
    const image = new Uint8Array(8192);
    image.set([0x41, 0x52, 0x4d, 0x64], 0x38); // "ARM\x64"
    await Deno.writeFile(`${dir}/Image`, image);
    assertEquals(await checkKernel(`${dir}/Image`, { cacheDir, arch: "arm64" }), `${dir}/Image`);
    const gz = await new Response(
      new Blob([image]).stream().pipeThrough(new CompressionStream("gzip")),
    ).bytes();
    await Deno.writeFile(`${dir}/Image.gz`, gz);
    const unpacked = await checkKernel(`${dir}/Image.gz`, { cacheDir, arch: "arm64" });
    assert(unpacked.startsWith(cacheDir) && unpacked.endsWith(".Image"), unpacked);
    assertEquals(await Deno.readFile(unpacked), image);
    const host = await findHostKernel();
    await refused(
      () => checkKernel(host.vmlinuz, { cacheDir, arch: "arm64" }),
      /not an arm64 Image/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkInitrd and checkRootfs - cpio and ext4 by their magic", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/gz`, new Uint8Array([0x1f, 0x8b, 8, 0]));
    await checkInitrd(`${dir}/gz`);
    await Deno.writeTextFile(`${dir}/cpio`, "070701" + "0".repeat(100));
    await checkInitrd(`${dir}/cpio`);
    await Deno.writeTextFile(`${dir}/junk`, "hello");
    await refused(() => checkInitrd(`${dir}/junk`), /not a cpio archive/);
    await Deno.writeFile(`${dir}/empty`, new Uint8Array());
    await refused(() => checkInitrd(`${dir}/empty`), /it is empty/);

    const img = `${dir}/fs.ext4`;
    const mk = await new Deno.Command("mkfs.ext4", { args: ["-q", "-F", img, "8M"] }).output();
    assert(mk.success);
    assertEquals(await checkRootfs(img), 8 * 1048576);
    await Deno.writeFile(`${dir}/zeros`, new Uint8Array(8192));
    await refused(() => checkRootfs(`${dir}/zeros`), /not an ext4 image/);
    await refused(() => checkRootfs(dir), /not a regular file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
