import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { BLOCK, checksum, encodeHeader, FIELD, padding, parseHeader, TarError } from "./tar.ts";

Deno.test("encodeHeader/parseHeader - round trip of a regular file", () => {
  const block = encodeHeader({
    name: "rootfs.ext4",
    size: 4 * 1024 ** 3,
    mode: 0o644,
    mtime: 1700000000,
  });
  assertEquals(block.length, BLOCK);
  assertEquals(parseHeader(block), {
    name: "rootfs.ext4",
    size: 4 * 1024 ** 3,
    mode: 0o644,
    mtime: 1700000000,
    type: "file",
  });
});

Deno.test("parseHeader - a wrong checksum, magic or octal field names the field", () => {
  const good = encodeHeader({ name: "a", size: 5, mode: 0o644, mtime: 0 });
  const flipped = good.slice();
  flipped[FIELD.NAME[0]] = "b".charCodeAt(0);
  const err = assertThrows(() => parseHeader(flipped));
  assert(err instanceof TarError && err.field === "chksum", err.message);
  const magic = good.slice();
  magic[FIELD.MAGIC[0]] = 0x58;
  assert((assertThrows(() => parseHeader(magic)) as TarError).field === "magic");
  // A non-octal size with a checksum that matches it.
  const size = good.slice();
  size.set(new TextEncoder().encode("0000000009x\0"), FIELD.SIZE[0]);
  size.set(
    new TextEncoder().encode(checksum(size).toString(8).padStart(6, "0") + "\0 "),
    FIELD.CHKSUM[0],
  );
  const sizeErr = assertThrows(() => parseHeader(size)) as TarError;
  assertEquals(sizeErr.field, "SIZE");
  // Parsing left the block untouched.
  assertEquals(flipped[FIELD.CHKSUM[0]], good[FIELD.CHKSUM[0]]);
});

Deno.test("parseHeader - GNU base-256 sizes (files of 8 GiB and more)", () => {
  const block = encodeHeader({ name: "big", size: 0, mode: 0o644, mtime: 0 });
  const size = new Uint8Array(12);
  size[0] = 0x80;
  new DataView(size.buffer).setBigUint64(4, 10n * 1024n ** 3n);
  block.set(size, FIELD.SIZE[0]);
  block.set(
    new TextEncoder().encode(checksum(block).toString(8).padStart(6, "0") + "\0 "),
    FIELD.CHKSUM[0],
  );
  assertEquals(parseHeader(block).size, 10 * 1024 ** 3);
});

Deno.test("encodeHeader - GNU tar reads what we write", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = new TextEncoder().encode("hello tar\n");
    const archive = new Uint8Array(BLOCK * 4);
    archive.set(
      encodeHeader({ name: "hello.txt", size: data.length, mode: 0o640, mtime: 1700000000 }),
    );
    archive.set(data, BLOCK);
    await Deno.writeFile(`${dir}/a.tar`, archive);
    const out = await new Deno.Command("tar", {
      args: ["-tvf", `${dir}/a.tar`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const line = new TextDecoder().decode(out.stdout).trim();
    assert(/^-rw-r----- root\/root +10 .* hello\.txt$/.test(line), line);
    assertEquals(padding(10), BLOCK - 10);
    assertEquals(padding(BLOCK), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
