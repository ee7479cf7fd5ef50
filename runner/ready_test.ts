import { join } from "node:path";
import { assert, assertEquals } from "../tests/_assert.ts";
import {
  type BootFiles,
  pruneReady,
  READY_FORMAT,
  readyInputs,
  readyKey,
  type ReadyShape,
  slotMounts,
} from "./ready.ts";

const shape: ReadyShape = { cpus: 2, memoryMiB: 2048, diskSizeMiB: 4096, accel: "tcg" };

/** Boot files and a root filesystem as small files in a temporary folder. */
async function files(dir: string): Promise<{ boot: BootFiles; rootfs: string }> {
  const boot: BootFiles = {
    kernel: join(dir, "vmlinux"),
    initramfs: join(dir, "initramfs.img"),
    tools: join(dir, "tools.ext4"),
    arch: "x86_64",
  };
  const rootfs = join(dir, "rootfs.ext4");
  for (const f of [boot.kernel, boot.initramfs, boot.tools!, rootfs]) {
    await Deno.writeTextFile(f, f);
  }
  return { boot, rootfs };
}

Deno.test("readyKey - another machine shape, boot file, tools disk, root or architecture names another snapshot", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { boot, rootfs } = await files(dir);
    const key = await readyKey(await readyInputs(boot, rootfs, shape));
    assertEquals(key, await readyKey(await readyInputs(boot, rootfs, shape)), "stable");
    const keys = new Set([key]);
    keys.add(await readyKey(await readyInputs(boot, rootfs, { ...shape, cpus: 1 })));
    keys.add(await readyKey(await readyInputs(boot, rootfs, { ...shape, memoryMiB: 1024 })));
    keys.add(await readyKey(await readyInputs(boot, rootfs, { ...shape, diskSizeMiB: 8192 })));
    keys.add(await readyKey(await readyInputs(boot, rootfs, { ...shape, accel: "kvm" })));
    keys.add(await readyKey(await readyInputs(boot, boot.tools!, shape)));
    keys.add(await readyKey(await readyInputs({ ...boot, arch: "arm64" }, rootfs, shape)));
    keys.add(await readyKey(await readyInputs({ ...boot, tools: rootfs }, rootfs, shape)));
    assertEquals(keys.size, 8);
    // A rebuilt asset (same path, new bytes: another size or mtime) is another snapshot too.
    for (const f of [boot.kernel, boot.initramfs, boot.tools!, rootfs]) {
      await Deno.writeTextFile(f, `${f} rebuilt`);
      const k = await readyKey(await readyInputs(boot, rootfs, shape));
      assert(!keys.has(k), `${f} changed, the key did not`);
      keys.add(k);
    }
    const inputs = await readyInputs(boot, rootfs, shape);
    assertEquals(inputs.format, READY_FORMAT);
    assertEquals(inputs.arch, "x86_64");
    assertEquals(inputs.tools?.path, boot.tools);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("slotMounts - the run's folders first, an empty read-only folder in the other slots", () => {
  assertEquals(slotMounts([{ hostPath: "/h", readOnly: false }], "/e"), [
    { tag: "shuru0", hostPath: "/h", readOnly: false },
    { tag: "shuru1", hostPath: "/e", readOnly: true },
    { tag: "shuru2", hostPath: "/e", readOnly: true },
    { tag: "shuru3", hostPath: "/e", readOnly: true },
  ]);
});

Deno.test("pruneReady - removes snapshots whose boot files changed or are gone and old leftovers; keeps current ones", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { boot, rootfs } = await files(dir);
    const root = join(dir, "ready");
    const make = async (name: string, inputs: unknown) => {
      await Deno.mkdir(join(root, name), { recursive: true });
      await Deno.writeTextFile(join(root, name, "ready.json"), JSON.stringify({ inputs }));
      await Deno.writeFile(join(root, name, "ram"), new Uint8Array(8192));
      await Deno.writeTextFile(join(root, `${name}.lock`), "");
    };
    await make("current", await readyInputs(boot, rootfs, shape));
    const old = join(dir, "old-vmlinux");
    await Deno.writeTextFile(old, "old");
    await make("gone", await readyInputs({ ...boot, kernel: old }, rootfs, shape));
    await Deno.remove(old);
    const changedKernel = join(dir, "changed-vmlinux");
    await Deno.writeTextFile(changedKernel, "v1");
    await make("changed", await readyInputs({ ...boot, kernel: changedKernel }, rootfs, shape));
    await Deno.writeTextFile(changedKernel, "version 2");
    await make("otherformat", { ...(await readyInputs(boot, rootfs, shape)), format: 1 });
    // A build that died an hour ago, one under way, a record not written yet.
    await Deno.mkdir(join(root, "tmp-dead"));
    await Deno.utime(join(root, "tmp-dead"), new Date(0), new Date(0));
    await Deno.mkdir(join(root, "tmp-live"));
    await Deno.mkdir(join(root, "making"));

    const kept = await pruneReady(root, { keepOtherFormats: true });
    assertEquals(kept.removed.sort(), ["changed", "gone", "tmp-dead"]);
    assert(kept.bytes > 0, "the freed bytes are counted");
    const all = await pruneReady(root);
    assertEquals(all.removed, ["otherformat"]);
    const left = (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name).sort();
    assertEquals(left, ["current", "current.lock", "making", "tmp-live"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
