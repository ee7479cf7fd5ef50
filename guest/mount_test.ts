import { assertEquals } from "../tests/_assert.ts";

/**
 * mount(2) changes global state, so the overlay is mounted by a child Deno process in a private
 * mount namespace (`unshare -m`): every mount disappears with it, the host is never touched.
 */
async function runInMountNamespace(script: string): Promise<{ code: number; out: string }> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-mount-" });
  try {
    const file = `${dir}/child.ts`;
    await Deno.writeTextFile(file, script);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("unshare", {
        args: ["-m", "--propagation", "private", Deno.execPath(), "run", "-A", file],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (e) {
      throw new Error("mount tests need unshare: apt-get install util-linux", { cause: e });
    }
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, out: text };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("mountOverlay - writes land on tmpfs, the lower folder stays untouched", async () => {
  const lower = await Deno.makeTempDir({ prefix: "shuru-lower-" });
  const base = await Deno.makeTempDir({ prefix: "shuru-ovl-" });
  try {
    await Deno.writeTextFile(`${lower}/keep.txt`, "original");
    await Deno.mkdir(`${lower}/sub`);
    const mountTs = import.meta.resolve("./mount.ts");
    const { code, out } = await runInMountNamespace(`
      import { mountOverlay } from ${JSON.stringify(mountTs)};
      const base = ${JSON.stringify(base)};
      const target = base + "/mnt";
      mountOverlay(${JSON.stringify(lower)}, target, { scratchRoot: base + "/scratch" });
      const seen = Deno.readTextFileSync(target + "/keep.txt");
      Deno.writeTextFileSync(target + "/keep.txt", "changed in guest");
      Deno.writeTextFileSync(target + "/sub/new.txt", "new");
      Deno.removeSync(target + "/sub", { recursive: true });
      const mounts = Deno.readTextFileSync("/proc/self/mounts").split("\\n")
        .filter((l) => l.includes(target)).map((l) => l.split(" ")[2]);
      console.log(JSON.stringify({ seen, now: Deno.readTextFileSync(target + "/keep.txt"), mounts }));
    `);
    assertEquals(code, 0, out);
    const result = JSON.parse(out.trim().split("\n").at(-1)!);
    assertEquals(result, { seen: "original", now: "changed in guest", mounts: ["overlay"] });
    assertEquals(await Deno.readTextFile(`${lower}/keep.txt`), "original");
    assertEquals((await Deno.stat(`${lower}/sub`)).isDirectory, true);
    let created = true;
    try {
      await Deno.stat(`${lower}/sub/new.txt`);
    } catch {
      created = false;
    }
    assertEquals(created, false, "guest writes must not reach the lower folder");
  } finally {
    await Deno.remove(lower, { recursive: true });
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("mountShare - rejects bad tags and overlay-unsafe paths before mounting", async () => {
  const { mountShare } = await import("./mount.ts");
  const { assertThrows } = await import("../tests/_assert.ts");
  assertThrows(() => mountShare("bad tag", "/tmp/x", { mode: "rw" }), "Cannot mount tag");
  assertThrows(() => mountShare("ok", "/tmp/a,b", { mode: "ro" }), "path contains");
});

Deno.test("shareFilesystem - 9p with its options, virtio-fs by tag alone", async () => {
  const { NINEP_OPTIONS, shareFilesystem } = await import("./mount.ts");
  assertEquals(shareFilesystem("9p"), { fstype: "9p", data: NINEP_OPTIONS });
  assertEquals(shareFilesystem("virtiofs"), { fstype: "virtiofs" });
});
