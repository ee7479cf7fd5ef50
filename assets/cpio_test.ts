import { assert, assertEquals } from "../tests/_assert.ts";
import { writeCpio } from "./cpio.ts";

async function cpioList(archive: Uint8Array): Promise<string> {
  const child = new Deno.Command("cpio", {
    args: ["-itv", "--quiet"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(archive);
  await w.close();
  const out = await child.output();
  assert(out.success, `cpio failed: ${new TextDecoder().decode(out.stderr)}; apt-get install cpio`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test("writeCpio: GNU cpio lists every member with its type, mode and size", async () => {
  const archive = writeCpio([
    { kind: "dir", path: "bin" },
    { kind: "file", path: "bin/hello", data: new TextEncoder().encode("hi!\n"), mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "hello" },
    { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
  ]);
  assertEquals(archive.length % 4, 0);
  const lines = (await cpioList(archive)).trim().split("\n");
  assertEquals(lines.length, 4);
  assert(/^drwxr-xr-x .* bin$/.test(lines[0]!), lines[0]);
  assert(/^-rwxr-xr-x .* 4 .* bin\/hello$/.test(lines[1]!), lines[1]);
  assert(/^lrwxrwxrwx .* bin\/sh -> hello$/.test(lines[2]!), lines[2]);
  assert(/^crw------- .* 5,\s*1 .* dev\/console$/.test(lines[3]!), lines[3]);
});

Deno.test("writeCpio: file contents round-trip through cpio -i", async () => {
  const data = new Uint8Array(1001).map((_, i) => i % 251);
  const archive = writeCpio([{ kind: "file", path: "x.bin", data }]);
  const dir = await Deno.makeTempDir();
  try {
    const child = new Deno.Command("cpio", {
      args: ["-id", "--quiet"],
      cwd: dir,
      stdin: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(archive);
    await w.close();
    assert((await child.output()).success);
    assertEquals(await Deno.readFile(`${dir}/x.bin`), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
