import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import {
  BLOCK,
  encodeHeader,
  padding,
  parseNumber,
  type TarEntry,
  TarError,
  TarReader,
} from "./tar.ts";

async function tarError(fn: () => Promise<unknown>): Promise<TarError> {
  const err = await assertRejects(fn);
  assert(err instanceof TarError, `expected a TarError, got ${err}`);
  return err;
}

/** Runs GNU tar over a tree built by `build` and returns the archive. */
async function gnuTar(
  build: (dir: string) => Promise<void>,
  args: string[] = ["--format=pax", "--xattrs"],
): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-tar-test-" });
  try {
    await Deno.mkdir(`${dir}/root`);
    await build(`${dir}/root`);
    const out = await new Deno.Command("tar", {
      args: ["-c", ...args, "--numeric-owner", "-C", `${dir}/root`, "."],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return out.stdout;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function streamOf(bytes: Uint8Array, piece = 777): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + piece));
      off += piece;
    },
  });
}

async function readAll(
  bytes: Uint8Array,
  piece?: number,
): Promise<{ entry: TarEntry; data: string }[]> {
  const tar = new TarReader(streamOf(bytes, piece));
  const out: { entry: TarEntry; data: string }[] = [];
  for (let e = await tar.next(); e; e = await tar.next()) {
    let data = "";
    if (e.type === "file") {
      const parts: Uint8Array<ArrayBuffer>[] = [];
      await tar.readData((c) => void parts.push(c.slice()));
      data = new TextDecoder().decode(await new Blob(parts).bytes());
    }
    out.push({ entry: e, data });
  }
  return out;
}

Deno.test("TarReader - reads what GNU tar writes: files, dirs, links, long names, xattrs", async () => {
  const long = "d".repeat(120) + "/" + "f".repeat(150);
  const bytes = await gnuTar(async (root) => {
    await Deno.mkdir(`${root}/etc`);
    await Deno.writeTextFile(`${root}/etc/passwd`, "root:x:0:0::/root:/bin/sh\n");
    await Deno.chmod(`${root}/etc/passwd`, 0o4755);
    await Deno.symlink("/etc/passwd", `${root}/link`);
    await Deno.link(`${root}/etc/passwd`, `${root}/hard`);
    await Deno.mkdir(`${root}/${long.split("/")[0]}`);
    await Deno.writeTextFile(`${root}/${long}`, "x".repeat(5000));
    await new Deno.Command("setfattr", {
      args: ["-n", "user.shuru", "-v", "0sAAEC/w==", `${root}/etc/passwd`],
    }).output();
    await new Deno.Command("chown", { args: ["-h", "1234:5678", `${root}/link`] }).output();
  });
  for (const piece of [1, 511, 512, 100_000]) {
    const entries = await readAll(bytes, piece);
    const by = new Map(entries.map((e) => [e.entry.path.replace(/^\.\//, ""), e]));
    const passwd = by.get("etc/passwd")!;
    assertEquals(passwd.entry.type, "file");
    assertEquals(passwd.data, "root:x:0:0::/root:/bin/sh\n");
    assertEquals(passwd.entry.mode, 0o4755);
    assertEquals([...passwd.entry.xattrs.get("user.shuru") ?? []], [0, 1, 2, 255]);
    const link = by.get("link")!.entry;
    assertEquals([link.type, link.linkName, link.uid, link.gid], [
      "symlink",
      "/etc/passwd",
      1234,
      5678,
    ]);
    const hard = by.get("hard")!.entry;
    assertEquals([hard.type, hard.linkName.replace(/^\.\//, "")], ["hardlink", "etc/passwd"]);
    assertEquals(by.get(long)?.data, "x".repeat(5000));
    assertEquals(by.get("etc/")?.entry.type ?? by.get("etc")?.entry.type, "dir");
  }
});

Deno.test("TarReader - GNU format long names and a fifo and a device", async () => {
  const long = "n".repeat(200);
  const bytes = await gnuTar(async (root) => {
    await Deno.writeTextFile(`${root}/${long}`, "hi");
    await new Deno.Command("mkfifo", { args: [`${root}/pipe`] }).output();
    await new Deno.Command("mknod", { args: [`${root}/null`, "c", "1", "3"] }).output();
  }, ["--format=gnu"]);
  const entries = await readAll(bytes);
  const by = new Map(entries.map((e) => [e.entry.path.replace(/^\.\//, ""), e]));
  assertEquals(by.get(long)?.data, "hi");
  assertEquals(by.get("pipe")?.entry.type, "fifo");
  const dev = by.get("null")!.entry;
  assertEquals([dev.type, dev.devMajor, dev.devMinor], ["char", 1, 3]);
});

Deno.test("TarReader - unread data is skipped; the archive may end without zero blocks", async () => {
  const bytes = await gnuTar(async (root) => {
    await Deno.writeTextFile(`${root}/a`, "a".repeat(3000));
    await Deno.writeTextFile(`${root}/b`, "b");
  });
  const tar = new TarReader(streamOf(bytes));
  const names: string[] = [];
  for (let e = await tar.next(); e; e = await tar.next()) names.push(e.path);
  assert(names.includes("./a") && names.includes("./b"));
  // Cut after the last entry's data (before the end-of-archive blocks).
  const end = bytes.length - 2 * BLOCK;
  let cut = end;
  while (cut > 0 && bytes.subarray(cut - BLOCK, cut).every((b) => b === 0)) cut -= BLOCK;
  assertEquals((await readAll(bytes.slice(0, cut))).length, names.length);
});

Deno.test("TarReader - corruption is one line naming the entry and field", async () => {
  const bytes = await gnuTar(async (root) => {
    await Deno.writeTextFile(`${root}/file`, "hello");
  }, ["--format=ustar"]);
  // ustar: [header ./][header ./file][data][zero blocks]
  const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
    ["checksum", (b) => {
      b[BLOCK + 10]! ^= 1; // a name byte of the second header
      return b;
    }, /header checksum/],
    ["truncated data", (b) => b.slice(0, BLOCK * 2 + 2), /truncated inside a file/],
    ["truncated header", (b) => b.slice(0, BLOCK + 100), /truncated inside a header/],
  ];
  for (const [name, corrupt, re] of cases) {
    const err = await tarError(() => readAll(corrupt(bytes.slice())));
    assert(re.test(err.message), `${name}: ${err.message}`);
    assert(!err.message.includes("\n"), name);
  }
});

/** A ustar header with the given fields and a correct checksum. */
function header(fields: { name: string; type: string; size?: string; mode?: string }): Uint8Array {
  const b = new Uint8Array(BLOCK);
  const put = (off: number, s: string) => b.set(new TextEncoder().encode(s), off);
  put(0, fields.name);
  put(100, fields.mode ?? "0000644\0");
  put(108, "0000000\0");
  put(116, "0000000\0");
  put(124, fields.size ?? "00000000000\0");
  put(136, "00000000000\0");
  put(156, fields.type);
  put(257, "ustar\0" + "00");
  put(148, "        ");
  let sum = 0;
  for (const x of b) sum += x;
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  return b;
}

Deno.test("TarReader - bad numbers, unknown types and huge pax headers are refused", async () => {
  const end = new Uint8Array(BLOCK * 2);
  const cases: [Uint8Array, RegExp][] = [
    [header({ name: "x", type: "0", size: "0000000009x\0" }), /size field .* is not a number/],
    [header({ name: "x", type: "S" }), /type "S"/],
    [header({ name: "x", type: "x", size: "77777777777\0" }), /pax header \(at most/],
    [header({ name: "", type: "0" }), /empty name/],
  ];
  for (const [h, re] of cases) {
    const err = await tarError(() => readAll(new Uint8Array([...h, ...end])));
    assert(re.test(err.message), err.message);
  }
});

Deno.test("parseNumber - octal, blank, base-256 and garbage", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assertEquals(parseNumber(enc("0000644\0")), 0o644);
  assertEquals(parseNumber(enc("  644 \0")), 0o644);
  assertEquals(parseNumber(new Uint8Array(8)), 0);
  assertEquals(parseNumber(new Uint8Array([0x80, 0, 0, 0, 0, 0, 1, 0])), 256);
  assertEquals(parseNumber(new Uint8Array([0xff, 0xff])), undefined);
  assertEquals(parseNumber(enc("12 3\0")), undefined);
  assertEquals(parseNumber(enc("9\0")), undefined);
});

Deno.test("TarReader - the owner's error for a malformed archive", async () => {
  class LayerError extends Error {}
  const bad = new Uint8Array(BLOCK * 3).fill(7);
  const tar = new TarReader(streamOf(bad), { what: "layer 1", error: (m) => new LayerError(m) });
  const err = await assertRejects(() => tar.next());
  assert(err instanceof LayerError && /^Cannot read layer 1: /.test(err.message), String(err));
});

Deno.test("encodeHeader - what we write, GNU tar and TarReader read", async () => {
  const data = new TextEncoder().encode("hello tar\n");
  const archive = new Uint8Array(BLOCK * 4);
  archive.set(
    encodeHeader({ name: "hello.txt", size: data.length, mode: 0o640, mtime: 1700000000 }),
  );
  archive.set(data, BLOCK);
  const [read] = await readAll(archive);
  assertEquals(
    [read!.entry.path, read!.entry.type, read!.entry.mode, read!.entry.mtime, read!.data],
    ["hello.txt", "file", 0o640, 1700000000, "hello tar\n"],
  );
  assertEquals(encodeHeader({ name: "big", size: 4 * 1024 ** 3, mode: 0, mtime: 0 }).length, BLOCK);
  const dir = await Deno.makeTempDir();
  try {
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
