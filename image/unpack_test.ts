import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { ImageError } from "./errors.ts";
import { writeExt4 } from "./ext4.ts";
import { layerReader } from "./source.ts";
import { RootTree, type TreeLimits } from "./unpack.ts";
import {
  e2fsckClean,
  ext4Cat,
  ext4Readlink,
  ext4Stat,
  ext4Xattrs,
  sh,
  streamOf,
  tarLayer,
  tempDir,
} from "./_test_utils.ts";

const LIMITS: TreeLimits = {
  maxBytes: 64 * 1048576,
  maxInodes: 10_000,
  diskLabel: "the 64 MiB test disk",
};

async function applyAll(stage: string, layers: Uint8Array[], limits = LIMITS): Promise<RootTree> {
  const tree = await RootTree.create(stage, limits);
  for (const [i, layer] of layers.entries()) {
    await tree.applyLayer(layerReader(streamOf(layer), `layer ${i + 1}`), i + 1, `layer ${i + 1}`);
  }
  return tree;
}

async function unpackError(stage: string, layers: Uint8Array[], limits = LIMITS) {
  const err = await assertRejects(() => applyAll(stage, layers, limits));
  assert(err instanceof ImageError, `expected an ImageError, got ${err}`);
  assert(!err.message.includes("\n"), err.message);
  return err;
}

Deno.test("RootTree + writeExt4 - layers in order: owners, modes, links, xattrs, devices, whiteouts, opaque dirs", async () => {
  await using tmp = await tempDir();
  const lower = await tarLayer(async (d) => {
    await Deno.mkdir(`${d}/etc`);
    await Deno.writeTextFile(
      `${d}/etc/passwd`,
      "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    await Deno.mkdir(`${d}/home/app`, { recursive: true });
    await Deno.writeTextFile(`${d}/home/app/notes`, "mine");
    await sh("chown", ["-R", "1000:1000", `${d}/home/app`]);
    await Deno.chmod(`${d}/home/app`, 0o700);
    await Deno.mkdir(`${d}/bin`);
    await Deno.writeTextFile(`${d}/bin/su`, "#!/bin/sh\n");
    await Deno.chmod(`${d}/bin/su`, 0o4755);
    await Deno.writeTextFile(`${d}/bin/ping`, "ping");
    await sh("setfattr", [
      "-n",
      "security.capability",
      "-v",
      "0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=",
      `${d}/bin/ping`,
    ]);
    await Deno.link(`${d}/bin/su`, `${d}/bin/su2`);
    await Deno.symlink("/etc/passwd", `${d}/passwd-link`);
    await sh("chown", ["-h", "7:8", `${d}/passwd-link`]);
    await Deno.mkdir(`${d}/dev`);
    await sh("mknod", ["-m", "0620", `${d}/dev/tty9`, "c", "4", "9"]);
    await sh("chown", ["0:5", `${d}/dev/tty9`]);
    await sh("mkfifo", ["-m", "0600", `${d}/fifo`]);
    await Deno.mkdir(`${d}/opaque/keep`, { recursive: true });
    await Deno.writeTextFile(`${d}/opaque/old`, "old");
    await Deno.writeTextFile(`${d}/opaque/keep/old-inside`, "old");
    await Deno.writeTextFile(`${d}/gone`, "bye");
    await Deno.writeTextFile(`${d}/becomes-dir`, "file");
    await Deno.mkdir(`${d}/tmp`);
    await Deno.chmod(`${d}/tmp`, 0o1777);
  });
  const upper = await tarLayer(async (d) => {
    await Deno.writeTextFile(`${d}/.wh.gone`, "");
    await Deno.mkdir(`${d}/opaque/keep`, { recursive: true });
    await Deno.writeTextFile(`${d}/opaque/.wh..wh..opq`, "");
    await Deno.writeTextFile(`${d}/opaque/keep/new`, "new");
    await Deno.mkdir(`${d}/becomes-dir`);
    await Deno.writeTextFile(`${d}/becomes-dir/inside`, "in");
    await Deno.mkdir(`${d}/bin`);
    await Deno.writeTextFile(`${d}/bin/su`, "replaced");
  });
  const tree = await applyAll(tmp.join("stage"), [lower, upper]);
  const image = tmp.join("root.ext4");
  const result = await writeExt4(tree, { image, bytes: 64 * 1048576, workDir: tmp.path });
  assert(result.commands > 0);
  await e2fsckClean(image);

  const st = (p: string) => ext4Stat(image, p);
  assertEquals(
    await ext4Cat(image, "/etc/passwd"),
    "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
  );
  const home = (await st("/home/app"))!;
  assertEquals([home.type, home.mode, home.uid, home.gid], ["directory", 0o700, 1000, 1000]);
  const notes = (await st("/home/app/notes"))!;
  assertEquals([notes.uid, notes.gid], [1000, 1000]);
  // The upper layer's /bin/su replaced the file; its old hard link keeps the old bytes.
  assertEquals(await ext4Cat(image, "/bin/su"), "replaced");
  assertEquals(await ext4Cat(image, "/bin/su2"), "#!/bin/sh\n");
  const su2 = (await st("/bin/su2"))!;
  assertEquals([su2.mode, su2.links], [0o4755, 1]);
  assert((await ext4Xattrs(image, "/bin/ping")).includes("security.capability (20)"));
  assertEquals(await ext4Readlink(image, "/passwd-link"), "/etc/passwd");
  const link = (await st("/passwd-link"))!;
  assertEquals([link.type, link.uid, link.gid], ["symlink", 7, 8]);
  const tty = (await st("/dev/tty9"))!;
  assertEquals([tty.type, tty.mode, tty.uid, tty.gid], ["character special", 0o620, 0, 5]);
  assertEquals((await st("/fifo"))?.type, "FIFO");
  assertEquals((await st("/tmp"))?.mode, 0o1777);
  // Whiteout, opaque directory, file replaced by a directory.
  assertEquals(await st("/gone"), undefined);
  assertEquals(await st("/opaque/old"), undefined);
  assertEquals(await st("/opaque/keep/old-inside"), undefined);
  assertEquals(await ext4Cat(image, "/opaque/keep/new"), "new");
  assertEquals((await st("/becomes-dir"))?.type, "directory");
  assertEquals(await ext4Cat(image, "/becomes-dir/inside"), "in");
  assertEquals(await st("/.wh.gone"), undefined);
  assertEquals(await st("/opaque/.wh..wh..opq"), undefined);
});

Deno.test("RootTree - paths outside the root, symlinked parents and bad links are refused", async () => {
  await using tmp = await tempDir();
  const cases: [string, () => Promise<Uint8Array[]>, string, RegExp][] = [
    [
      "dot-dot",
      async () => [
        await tarLayer(async (d) => {
          await Deno.mkdir(`${d}/a`);
          await Deno.writeTextFile(`${d}/a/x`, "x");
        }).then((t) => rename(t, "./a/x", "./../x")),
      ],
      "unsafe_path",
      /"\.\." component/,
    ],
    [
      "symlinked parent",
      async () => [
        await tarLayer(async (d) => await Deno.symlink("/etc", `${d}/evil`)),
        await tarLayer(async (d) => {
          await Deno.mkdir(`${d}/evil`);
          await Deno.writeTextFile(`${d}/evil/passwd`, "pwned");
        }, ["evil/passwd"]),
      ],
      "unsafe_path",
      /goes through \/evil, a symlink/,
    ],
    [
      "hard link through a symlink",
      async () => [
        await tarLayer(async (d) => {
          await Deno.mkdir(`${d}/real`);
          await Deno.writeTextFile(`${d}/real/f`, "f");
          await Deno.symlink("real", `${d}/sym`);
        }),
        await tarLayer(async (d) => {
          await Deno.writeTextFile(`${d}/aaaa`, "f");
          await Deno.link(`${d}/aaaa`, `${d}/bbbb`);
        }).then((t) => rename(t, "./aaaa", "./sym/f", "link")),
      ],
      "unsafe_path",
      /through a symlink/,
    ],
    [
      "hard link to nothing",
      async () => [
        await tarLayer(async (d) => {
          await Deno.writeTextFile(`${d}/aaaa`, "f");
          await Deno.link(`${d}/aaaa`, `${d}/bbbb`);
        }).then((t) => rename(t, "./aaaa", "./zzzz", "link")),
      ],
      "bad_layer",
      /does not have/,
    ],
  ];
  for (const [name, layers, code, re] of cases) {
    const err = await unpackError(tmp.join(name), await layers());
    assertEquals(err.code, code, name);
    assert(re.test(err.message), `${name}: ${err.message}`);
  }
});

Deno.test("RootTree - live bytes and inodes are bounded by the disk", async () => {
  await using tmp = await tempDir();
  const big = await tarLayer(async (d) => {
    await Deno.writeFile(`${d}/big`, new Uint8Array(3 * 1048576));
  });
  const err = await unpackError(tmp.join("a"), [big], { ...LIMITS, maxBytes: 2 * 1048576 });
  assertEquals(err.code, "too_large");
  assert(/more than the 64 MiB test disk can hold/.test(err.message), err.message);
  const many = await tarLayer(async (d) => {
    for (let i = 0; i < 50; i++) await Deno.writeTextFile(`${d}/f${i}`, "");
  });
  const err2 = await unpackError(tmp.join("b"), [many], { ...LIMITS, maxInodes: 20 });
  assertEquals(err2.code, "too_large");
  // Whiteouts give bytes back: the same 3 MiB written twice, removed in between, fits 4 MiB.
  const remove = await tarLayer(async (d) => await Deno.writeTextFile(`${d}/.wh.big`, ""));
  const tree = await applyAll(tmp.join("c"), [big, remove, big], {
    ...LIMITS,
    maxBytes: 4 * 1048576,
  });
  assertEquals(tree.bytes, 3 * 1048576);
});

Deno.test("RootTree.readFile - follows symlinks inside the tree only", async () => {
  await using tmp = await tempDir();
  const layer = await tarLayer(async (d) => {
    await Deno.mkdir(`${d}/usr/etc`, { recursive: true });
    await Deno.writeTextFile(`${d}/usr/etc/passwd`, "inside");
    await Deno.symlink("usr/etc", `${d}/etc`);
    await Deno.symlink("../../../../../usr/etc/passwd", `${d}/deep`);
  });
  const tree = await applyAll(tmp.join("s"), [layer]);
  assertEquals(new TextDecoder().decode(tree.readFile("/etc/passwd")), "inside");
  assertEquals(new TextDecoder().decode(tree.readFile("/deep")), "inside");
  assertEquals(tree.readFile("/nope"), undefined);
});

/**
 * Renames member `from` to `to` in a ustar/pax archive (fixing the header checksum); with
 * `link`, the member named `to` becomes a hard link... to keep it simple: the header whose name
 * is `from` gets name `to`, or with "link" the first hard-link header gets link name `to`.
 */
function rename(
  tar: Uint8Array,
  from: string,
  to: string,
  what: "name" | "link" = "name",
): Uint8Array {
  const out = tar.slice();
  const enc = new TextEncoder();
  for (let off = 0; off + 512 <= out.length; off += 512) {
    const h = out.subarray(off, off + 512);
    const name = new TextDecoder().decode(h.subarray(0, 100)).replace(/\0.*$/s, "");
    const type = String.fromCharCode(h[156]!);
    const hit = what === "name" ? name === from : type === "1";
    if (!hit) continue;
    const at = what === "name" ? 0 : 157;
    h.fill(0, at, at + 100);
    h.set(enc.encode(to), at);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    // A pax header may also carry the path; drop our change's twin by renaming it too.
    return out;
  }
  throw new Error(`no member ${from}`);
}
