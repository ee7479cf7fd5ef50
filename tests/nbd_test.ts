/**
 * NbdServer + FileBackend against real NBD peers (nbdinfo, qemu-io, qemu-img, nbdcopy) and a
 * hostile raw client (tests/nbd/raw_client.ts). The server runs in this process on a socket in
 * a fresh temp dir; the clients are separate processes or raw sockets.
 */

import { assert, assertEquals } from "./assert.ts";
import {
  type BlockBackend,
  type Extent,
  FileBackend,
  NbdServer,
  type WriteOptions,
} from "../nbd/mod.ts";
import { Command, CommandFlag, ErrorCode, Option, OptionReply, ReplyType } from "../nbd/wire.ts";
import { RawClient } from "./nbd/raw_client.ts";

const INSTALL = "apt-get install qemu-utils libnbd-bin";
const IMAGE_SIZE = 8 * 1024 * 1024;

async function requireTool(name: string): Promise<void> {
  try {
    await new Deno.Command(name, { args: ["--version"], stdout: "null", stderr: "null" }).output();
  } catch {
    throw new Error(`Cannot run NBD tests: ${name} is not installed (${INSTALL})`);
  }
}

async function tool(name: string, args: string[]): Promise<string> {
  await requireTool(name);
  const out = await new Deno.Command(name, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${name} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Deterministic, non-repeating-looking image contents. */
function pattern(size: number, seed = 1): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
    b[i + 1] = (x >>> 8) & 0xff;
    b[i + 2] = (x >>> 16) & 0xff;
    b[i + 3] = (x >>> 24) & 0xff;
  }
  return b;
}

interface Fixture extends AsyncDisposable {
  dir: string;
  image: string;
  socket: string;
  uri: string;
  server: NbdServer;
  backend: BlockBackend;
  contents: Uint8Array;
}

async function serve(
  opts: { readOnly?: boolean; exportName?: string; wrap?: (b: FileBackend) => BlockBackend } = {},
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-nbd-test-" });
  const image = `${dir}/disk.raw`;
  const contents = pattern(IMAGE_SIZE);
  await Deno.writeFile(image, contents);
  const file = await FileBackend.open(image, { readOnly: opts.readOnly ?? false });
  const backend = opts.wrap ? opts.wrap(file) : file;
  const socket = `${dir}/nbd.sock`;
  const server = await NbdServer.listen(backend, {
    socketPath: socket,
    ...(opts.exportName !== undefined ? { exportName: opts.exportName } : {}),
  });
  return {
    dir,
    image,
    socket,
    uri: `nbd+unix:///?socket=${socket}`,
    server,
    backend,
    contents,
    async [Symbol.asyncDispose]() {
      await server.close();
      await backend.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array, what: string): void {
  assertEquals(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what}: first difference at byte ${i}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------------------------

Deno.test("nbdinfo - size, export names and flags of a writable export", async () => {
  await using f = await serve({ exportName: "disk" });
  for (const path of ["", "disk"]) {
    const info = JSON.parse(
      await tool("nbdinfo", ["--json", `nbd+unix:///${path}?socket=${f.socket}`]),
    );
    const e = info.exports[0];
    assertEquals(e["export-name"], path);
    assertEquals(e["export-size"], IMAGE_SIZE);
    assertEquals(e.is_read_only, false);
    assertEquals(e.can_multi_conn, true);
    assertEquals(e.can_flush, true);
    assertEquals(e.can_fua, true);
    assertEquals(e.can_trim, true);
    assertEquals(e.can_zero, true);
    assertEquals(e.can_fast_zero, true);
    assertEquals(e.can_df, true);
    assert(e.contexts.includes("base:allocation"), JSON.stringify(e.contexts));
    assertEquals(info.structured, true);
  }
  const list = JSON.parse(await tool("nbdinfo", ["--list", "--json", f.uri]));
  assertEquals(list.exports.map((e: { "export-name": string }) => e["export-name"]), ["disk"]);
  // An unknown export is refused during NBD_OPT_GO (nbdinfo fails) and the server lives on.
  await requireTool("nbdinfo");
  const bad = await new Deno.Command("nbdinfo", {
    args: [`nbd+unix:///nope?socket=${f.socket}`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assertEquals(bad.success, false);
  assertEquals(await tool("nbdinfo", ["--size", f.uri]), `${IMAGE_SIZE}\n`);
});

Deno.test("nbdinfo - a read-only export says so and offers no write features", async () => {
  await using f = await serve({ readOnly: true });
  const e = JSON.parse(await tool("nbdinfo", ["--json", f.uri])).exports[0];
  assertEquals(e.is_read_only, true);
  assertEquals(e.can_trim, false);
  assertEquals(e.can_zero, false);
  assertEquals(e.can_multi_conn, true);
});

Deno.test("qemu-io - pattern writes (plain, FUA, zeroes, discard) read back and reach the file", async () => {
  await using f = await serve();
  const out = await tool("qemu-io", [
    "-f",
    "raw",
    "-c",
    "write -P 0xab 0 1M",
    "-c",
    "write -f -P 0xcd 1M 64k", // FUA
    "-c",
    "write -z 2M 512k", // NBD_CMD_WRITE_ZEROES
    "-c",
    "write -P 0x11 3145727 3", // unaligned, crosses a 4 KiB boundary
    "-c",
    "flush",
    "-c",
    "read -P 0xab 0 1M",
    "-c",
    "read -P 0xcd 1M 64k",
    "-c",
    "read -P 0 2M 512k",
    "-c",
    "read -P 0x11 3145727 3",
    f.uri,
  ]);
  assert(!out.includes("Pattern verification failed"), out);
  assert(!/error|failed/i.test(out), out);
  const disk = await Deno.readFile(f.image);
  assert(disk.subarray(0, 1 << 20).every((x) => x === 0xab), "0xab region on disk");
  assert(disk.subarray(1 << 20, (1 << 20) + 65536).every((x) => x === 0xcd), "FUA region");
  assert(disk.subarray(2 << 20, (2 << 20) + (512 << 10)).every((x) => x === 0), "zeroed region");
  sameBytes(disk.subarray(4 << 20), f.contents.subarray(4 << 20), "untouched tail");
  // Discard is a hint: it must succeed; the file keeps its size.
  await tool("qemu-io", ["-f", "raw", "-c", "discard 5M 1M", f.uri]);
  assertEquals((await Deno.stat(f.image)).size, IMAGE_SIZE);
});

Deno.test("qemu-img - compare and convert agree byte for byte with the image", async () => {
  await using f = await serve({ readOnly: true });
  await tool("qemu-img", ["compare", "-f", "raw", "-F", "raw", f.uri, f.image]);
  const out = `${f.dir}/converted.raw`;
  await tool("qemu-img", ["convert", "-f", "raw", "-O", "raw", f.uri, out]);
  sameBytes(await Deno.readFile(out), f.contents, "qemu-img convert output");
});

Deno.test("nbdcopy - whole image out and back in, byte-exact, over 4 connections", async () => {
  await using f = await serve();
  const out = `${f.dir}/copy.raw`;
  await tool("nbdcopy", ["--connections=4", f.uri, out]);
  sameBytes(await Deno.readFile(out), f.contents, "nbdcopy from the server");
  const other = pattern(IMAGE_SIZE, 7);
  const src = `${f.dir}/src.raw`;
  await Deno.writeFile(src, other);
  await tool("nbdcopy", ["--connections=4", "--flush", src, f.uri]);
  sameBytes(await Deno.readFile(f.image), other, "nbdcopy into the server");
});

Deno.test("nbdinfo --map - base:allocation reports holes and data of a sparse file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-nbd-test-" });
  const image = `${dir}/sparse.raw`;
  {
    using file = await Deno.open(image, { write: true, create: true });
    await file.truncate(4 << 20);
    await file.seek(1 << 20, Deno.SeekMode.Start);
    await file.write(new Uint8Array(1 << 20).fill(9));
  }
  const backend = await FileBackend.open(image, { readOnly: true });
  const server = await NbdServer.listen(backend, { socketPath: `${dir}/s.sock` });
  try {
    const map = JSON.parse(
      await tool("nbdinfo", ["--map", "--json", `nbd+unix:///?socket=${dir}/s.sock`]),
    ) as { offset: number; length: number; type: number }[];
    const data = map.filter((e) => (e.type & 1) === 0);
    assertEquals(data.map((e) => [e.offset, e.length]), [[1 << 20, 1 << 20]]);
    assertEquals(map.reduce((n, e) => n + e.length, 0), 4 << 20);
  } finally {
    await server.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/**
 * A delay filter (like nbdkit's): reads at `heldOffset` wait until `release()`. Used to show
 * that a slow request does not hold up faster ones behind it.
 */
class HoldingBackend implements BlockBackend {
  #inner: FileBackend;
  #gate: Promise<void>;
  #open!: () => void;
  held = 0;
  heldOffset: number;
  constructor(inner: FileBackend, heldOffset: number) {
    this.#inner = inner;
    this.heldOffset = heldOffset;
    this.#gate = new Promise((r) => (this.#open = r));
  }
  get size() {
    return this.#inner.size;
  }
  get readOnly() {
    return this.#inner.readOnly;
  }
  get multiConn() {
    return this.#inner.multiConn;
  }
  release(): void {
    this.#open();
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset === this.heldOffset) {
      this.held++;
      await this.#gate;
    }
    return this.#inner.read(offset, length);
  }
  write(offset: number, data: Uint8Array, options?: WriteOptions) {
    return this.#inner.write(offset, data, options);
  }
  writeZeroes(offset: number, length: number, options?: WriteOptions) {
    return this.#inner.writeZeroes(offset, length, options);
  }
  trim(offset: number, length: number) {
    return this.#inner.trim(offset, length);
  }
  flush() {
    return this.#inner.flush();
  }
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.#inner.blockStatus(offset, length);
  }
  close() {
    return this.#inner.close();
  }
}

Deno.test("NbdServer - replies go out as requests complete, not in request order", async () => {
  let holder!: HoldingBackend;
  await using f = await serve({ wrap: (b) => (holder = new HoldingBackend(b, 0)) });
  const c = await RawClient.connect(f.socket);
  try {
    await c.handshake({ structured: true });
    await c.request({ type: Command.READ, offset: 0, length: 4096, cookie: 1 });
    await c.request({ type: Command.READ, offset: 4096, length: 4096, cookie: 2 });
    await c.request({ type: Command.FLUSH, offset: 0, length: 0, cookie: 3 });
    const first = await c.reply();
    const second = await c.reply();
    assertEquals([first.cookie, second.cookie].sort(), [2, 3]);
    sameBytes(
      (first.cookie === 2 ? first : second).data.subarray(8),
      f.contents.subarray(4096, 8192),
      "second read",
    );
    assertEquals(holder.held, 1);
    holder.release();
    const last = await c.reply();
    assertEquals(last.cookie, 1);
    sameBytes(last.data.subarray(8), f.contents.subarray(0, 4096), "held read");
  } finally {
    c.close();
  }
});

Deno.test("NbdServer - many clients at once each read their own ranges correctly", async () => {
  await using f = await serve({ readOnly: true });
  const clients = await Promise.all(
    Array.from({ length: 8 }, () => RawClient.connect(f.socket)),
  );
  try {
    await Promise.all(clients.map((c) => c.handshake({ structured: true })));
    await Promise.all(clients.map(async (c, i) => {
      for (let k = 0; k < 16; k++) {
        const off = ((i * 16 + k) * 61_440) % (IMAGE_SIZE - 65536);
        await c.request({ type: Command.READ, offset: off, length: 65536, cookie: k + 1 });
      }
      for (let k = 0; k < 16; k++) {
        const r = await c.reply();
        const off = ((i * 16 + r.cookie - 1) * 61_440) % (IMAGE_SIZE - 65536);
        assertEquals(r.type, ReplyType.OFFSET_DATA);
        sameBytes(r.data.subarray(8), f.contents.subarray(off, off + 65536), `client ${i}`);
      }
    }));
    assertEquals(f.server.activeConnections, 8);
  } finally {
    for (const c of clients) c.close();
  }
});

Deno.test("NbdServer - CAN_MULTI_CONN holds: a write on one connection is read on another", async () => {
  await using f = await serve();
  const a = await RawClient.connect(f.socket);
  const b = await RawClient.connect(f.socket);
  try {
    await a.handshake();
    await b.handshake({ structured: true });
    for (let i = 0; i < 8; i++) {
      const data = new Uint8Array(4096).fill(0x30 + i);
      await a.request({ type: Command.WRITE, offset: i * 65536, length: 4096, cookie: i }, data);
      assertEquals((await a.reply()).error, 0);
      // No flush in between: the reply alone must make the write visible everywhere.
      const r = await b.read(i * 65536, 4096, 100 + i);
      sameBytes(r.data, data, `write ${i} seen by the other connection`);
    }
  } finally {
    a.close();
    b.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Hostile client
// ---------------------------------------------------------------------------------------------

Deno.test("hostile client - bad requests get NBD errors and the connection keeps serving", async (t) => {
  await using f = await serve();
  for (const structured of [false, true]) {
    await t.step(structured ? "structured replies" : "simple replies", async () => {
      const c = await RawClient.connect(f.socket);
      try {
        await c.handshake({ structured });
        const check = async (
          r: { type: number; offset: number; length: number; flags?: number },
          want: number,
          payload?: Uint8Array,
        ) => {
          await c.request({ ...r, cookie: 77 }, payload);
          const rep = await c.reply();
          assertEquals(rep.cookie, 77);
          assertEquals(rep.error, want, JSON.stringify(r));
          if (structured) assertEquals(rep.type, ReplyType.ERROR);
          // ... and the very next request on the same connection works.
          const ok = await c.read(4096, 512, 78);
          assertEquals(ok.error, 0);
          sameBytes(ok.data, f.contents.subarray(4096, 4608), "read after an error");
        };
        await check({ type: Command.READ, offset: IMAGE_SIZE - 10, length: 20 }, ErrorCode.EINVAL);
        await check({ type: Command.READ, offset: 2 ** 62, length: 1 }, ErrorCode.EINVAL);
        await check({ type: Command.READ, offset: 0, length: 0 }, ErrorCode.EINVAL);
        await check({ type: Command.TRIM, offset: 0, length: 0 }, ErrorCode.EINVAL);
        await check({ type: Command.WRITE, offset: 0, length: 0 }, ErrorCode.EINVAL);
        // Out-of-range write: ENOSPC, and its payload is drained (the next read still parses).
        await check(
          { type: Command.WRITE, offset: IMAGE_SIZE - 4, length: 8192 },
          ErrorCode.ENOSPC,
          new Uint8Array(8192).fill(0xee),
        );
        await check({ type: 99, offset: 0, length: 1 }, ErrorCode.EINVAL);
        await check({ type: Command.READ, offset: 0, length: 1, flags: 1 << 12 }, ErrorCode.EINVAL);
        await check(
          { type: Command.WRITE_ZEROES, offset: IMAGE_SIZE, length: 1 },
          ErrorCode.ENOSPC,
        );
        await check({ type: Command.FLUSH, offset: 1, length: 0 }, ErrorCode.EINVAL);
        await check({ type: Command.BLOCK_STATUS, offset: 0, length: 4096 }, ErrorCode.EINVAL);
      } finally {
        c.close();
      }
    });
  }
  sameBytes(await Deno.readFile(f.image), f.contents, "image after rejected requests");
});

Deno.test("hostile client - writes to a read-only export are EPERM and the payload is drained", async () => {
  await using f = await serve({ readOnly: true });
  const c = await RawClient.connect(f.socket);
  try {
    await c.handshake();
    await c.request(
      { type: Command.WRITE, offset: 0, length: 65536, cookie: 5 },
      new Uint8Array(65536).fill(1),
    );
    assertEquals((await c.reply()).error, ErrorCode.EPERM);
    await c.request({ type: Command.TRIM, offset: 0, length: 65536, cookie: 6 });
    assertEquals((await c.reply()).error, ErrorCode.EPERM);
    await c.request({ type: Command.WRITE_ZEROES, offset: 0, length: 65536, cookie: 7 });
    assertEquals((await c.reply()).error, ErrorCode.EPERM);
    const r = await c.read(0, 65536, 8);
    assertEquals(r.error, 0);
    sameBytes(r.data, f.contents.subarray(0, 65536), "read after EPERM");
  } finally {
    c.close();
  }
  sameBytes(await Deno.readFile(f.image), f.contents, "read-only image");
});

Deno.test("hostile client - a bad request magic closes only that connection", async () => {
  await using f = await serve();
  const good = await RawClient.connect(f.socket);
  const bad = await RawClient.connect(f.socket);
  try {
    await good.handshake();
    await bad.handshake();
    const junk = new Uint8Array(28).fill(0x41);
    await bad.send(junk);
    assertEquals(await bad.closedByServer(), true);
    const r = await good.read(8192, 4096);
    assertEquals(r.error, 0);
    sameBytes(r.data, f.contents.subarray(8192, 12288), "other connection");
    assertEquals(f.server.stats.protocolErrors, 1);
  } finally {
    good.close();
    bad.close();
  }
});

Deno.test("hostile client - handshake abuse closes the connection, the server lives on", async (t) => {
  await using f = await serve();
  await t.step("option length of 4 GiB - 1", async () => {
    const c = await RawClient.connect(f.socket);
    try {
      await c.greet();
      const h = new Uint8Array(16);
      const v = new DataView(h.buffer);
      v.setBigUint64(0, 0x49484156454f5054n);
      v.setUint32(8, Option.GO);
      v.setUint32(12, 0xffffffff);
      await c.send(h);
      assertEquals(await c.closedByServer(), true);
    } finally {
      c.close();
    }
  });
  await t.step("NBD_OPT_EXPORT_NAME for an unknown export", async () => {
    const c = await RawClient.connect(f.socket);
    try {
      await c.greet();
      await c.option(Option.EXPORT_NAME, new TextEncoder().encode("nope"));
      assertEquals(await c.closedByServer(), true);
    } finally {
      c.close();
    }
  });
  await t.step("unsupported option is ERR_UNSUP, then NBD_OPT_ABORT", async () => {
    const c = await RawClient.connect(f.socket);
    try {
      await c.greet();
      await c.option(Option.STARTTLS);
      assertEquals((await c.optionReply()).type, OptionReply.ERR_UNSUP);
      await c.option(Option.ABORT);
      assertEquals((await c.optionReply()).type, OptionReply.ACK);
      assertEquals(await c.closedByServer(), true);
    } finally {
      c.close();
    }
  });
  await t.step("client hangs up mid-request", async () => {
    const c = await RawClient.connect(f.socket);
    await c.handshake();
    await c.send(new Uint8Array(10)); // a third of a request header
    c.close();
  });
  await t.step("client hangs up mid-payload (valid and rejected writes)", async () => {
    for (const offset of [0, IMAGE_SIZE]) {
      const c = await RawClient.connect(f.socket);
      await c.handshake();
      await c.request(
        { type: Command.WRITE, offset, length: 65536, cookie: 1 },
        new Uint8Array(10),
      );
      c.close();
    }
    // The server must let go of these connections (and so close() must not wait for them).
    const deadline = Date.now() + 60_000;
    while (f.server.activeConnections > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(f.server.activeConnections, 0, "connections with a half-sent WRITE linger");
  });
  assertEquals(await tool("nbdinfo", ["--size", f.uri]), `${IMAGE_SIZE}\n`);
});

Deno.test("raw client - BLOCK_STATUS, WRITE_ZEROES flags and FUA over the wire", async () => {
  await using f = await serve();
  const c = await RawClient.connect(f.socket);
  try {
    await c.handshake({ structured: true, baseAllocation: true });
    // Zero with holes allowed: the range is punched (a hole that reads as zeros).
    await c.request({ type: Command.WRITE_ZEROES, offset: 1 << 20, length: 1 << 20, cookie: 1 });
    assertEquals((await c.reply()).error, 0);
    // NO_HOLE: zeros, but storage stays allocated.
    await c.request({
      type: Command.WRITE_ZEROES,
      offset: 3 << 20,
      length: 1 << 20,
      flags: CommandFlag.NO_HOLE | CommandFlag.FUA,
      cookie: 2,
    });
    assertEquals((await c.reply()).error, 0);
    const z = await c.read(1 << 20, 4096, 3);
    assert(z.data.every((x) => x === 0));
    await c.request({ type: Command.BLOCK_STATUS, offset: 0, length: 4 << 20, cookie: 4 });
    const bs = await c.reply();
    assertEquals(bs.type, ReplyType.BLOCK_STATUS);
    const v = new DataView(bs.data.buffer);
    const desc: [number, number][] = [];
    for (let o = 4; o < bs.data.length; o += 8) desc.push([v.getUint32(o), v.getUint32(o + 4)]);
    // data, hole+zero (punched), data (NO_HOLE zeroing keeps allocation).
    assertEquals(desc, [[1 << 20, 0], [1 << 20, 3], [2 << 20, 0]]);
    await c.request({
      type: Command.BLOCK_STATUS,
      offset: 0,
      length: 4 << 20,
      flags: CommandFlag.REQ_ONE,
      cookie: 5,
    });
    assertEquals((await c.reply()).data.length, 4 + 8);
    // FUA write then plain FLUSH.
    await c.request(
      { type: Command.WRITE, offset: 0, length: 4096, flags: CommandFlag.FUA, cookie: 6 },
      new Uint8Array(4096).fill(0x5a),
    );
    assertEquals((await c.reply()).error, 0);
    await c.request({ type: Command.FLUSH, offset: 0, length: 0, cookie: 7 });
    assertEquals((await c.reply()).error, 0);
  } finally {
    c.close();
  }
  const disk = await Deno.readFile(f.image);
  assert(disk.subarray(0, 4096).every((x) => x === 0x5a));
  assert(disk.subarray(1 << 20, 2 << 20).every((x) => x === 0));
  assert(disk.subarray(3 << 20, 4 << 20).every((x) => x === 0));
});

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

Deno.test("NbdServer - allClientsDisconnected resolves after the last client's DISC", async () => {
  await using f = await serve();
  const idle = f.server.allClientsDisconnected();
  let resolved = false;
  idle.then(() => (resolved = true));
  const a = await RawClient.connect(f.socket);
  const b = await RawClient.connect(f.socket);
  try {
    await a.handshake();
    await b.handshake();
    await a.request({ type: Command.DISC, offset: 0, length: 0, cookie: 1 });
    assertEquals(await a.closedByServer(), true);
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(resolved, false); // b is still connected
    await b.request({ type: Command.DISC, offset: 0, length: 0, cookie: 1 });
    await idle;
    assertEquals(f.server.activeConnections, 0);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("NbdServer - close() stops accepting and disconnects clients", async () => {
  const f = await serve();
  const c = await RawClient.connect(f.socket);
  try {
    await c.handshake();
    const r = await c.read(0, 4096);
    assertEquals(r.error, 0);
    await f.server.close();
    assertEquals(await c.closedByServer(), true);
    let refused = false;
    try {
      (await Deno.connect({ transport: "unix", path: f.socket })).close();
    } catch {
      refused = true;
    }
    assertEquals(refused, true);
  } finally {
    c.close();
    await f[Symbol.asyncDispose]();
  }
});

// ---------------------------------------------------------------------------------------------
// Golden transcripts (tests/nbd/transcripts/*.txt, written by hand from the protocol document)
// ---------------------------------------------------------------------------------------------

/** Parses a transcript: `C`/`S` lines of hex groups, "ASCII strings" and zeros(N). */
function parseTranscript(text: string): { client: Uint8Array; server: Uint8Array } {
  const out = { C: [] as number[], S: [] as number[] };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\s+#.*$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const side = line[0] as "C" | "S";
    if (side !== "C" && side !== "S") throw new Error(`bad transcript line: ${raw}`);
    const rest = line.slice(1).trim();
    const str = rest.match(/^"(.*)"$/);
    if (str) {
      out[side].push(...new TextEncoder().encode(str[1]!));
      continue;
    }
    for (const tok of rest.split(/\s+/)) {
      const z = tok.match(/^zeros\((\d+)\)$/);
      if (z) {
        out[side].push(...new Array(Number(z[1])).fill(0));
      } else if (/^([0-9a-f]{2})+$/.test(tok)) {
        for (let i = 0; i < tok.length; i += 2) out[side].push(parseInt(tok.slice(i, i + 2), 16));
      } else {
        throw new Error(`bad transcript token "${tok}" in: ${raw}`);
      }
    }
  }
  return { client: new Uint8Array(out.C), server: new Uint8Array(out.S) };
}

Deno.test("golden transcripts - the server's bytes match the hand-written expectation", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-nbd-test-" });
  const image = `${dir}/ramp.raw`;
  await Deno.writeFile(image, Uint8Array.from({ length: 65536 }, (_, i) => i & 0xff));
  const backend = await FileBackend.open(image, { readOnly: true });
  const socketPath = `${dir}/s.sock`;
  const server = await NbdServer.listen(backend, { socketPath });
  try {
    const folder = new URL("./nbd/transcripts/", import.meta.url);
    const names = [...Deno.readDirSync(folder)].map((e) => e.name).filter((n) => n.endsWith(".txt"))
      .sort();
    assert(names.length >= 3, `transcripts found: ${names}`);
    for (const name of names) {
      await t.step(name, async () => {
        const { client, server: expected } = parseTranscript(
          await Deno.readTextFile(new URL(name, folder)),
        );
        const c = await RawClient.connect(socketPath);
        try {
          await c.send(client);
          const got = await c.readExact(expected.length);
          assert(got !== null, "server closed early");
          const hex = (b: Uint8Array) =>
            [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
          assertEquals(hex(got), hex(expected));
          assertEquals(await c.closedByServer(), true); // and nothing more
        } finally {
          c.close();
        }
      });
    }
  } finally {
    await server.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NbdServer - close() finishes requests in flight; later ones get ESHUTDOWN", async () => {
  let holder!: HoldingBackend;
  const f = await serve({ wrap: (b) => (holder = new HoldingBackend(b, 0)) });
  const c = await RawClient.connect(f.socket);
  try {
    await c.handshake({ structured: true });
    await c.request({ type: Command.READ, offset: 0, length: 4096, cookie: 1 });
    while (holder.held === 0) await new Promise((r) => setTimeout(r, 5));
    const closing = f.server.close();
    await c.request({ type: Command.READ, offset: 4096, length: 4096, cookie: 2 });
    const refused = await c.reply();
    assertEquals([refused.cookie, refused.error], [2, ErrorCode.ESHUTDOWN]);
    holder.release();
    const held = await c.reply();
    assertEquals([held.cookie, held.error], [1, 0]);
    sameBytes(held.data.subarray(8), f.contents.subarray(0, 4096), "read finished during close");
    await closing;
    assertEquals(await c.closedByServer(), true);
  } finally {
    c.close();
    await f[Symbol.asyncDispose]();
  }
});

Deno.test("NbdServer - silent clients time out and connections beyond the cap are refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-nbd-test-" });
  await Deno.writeFile(`${dir}/d.raw`, new Uint8Array(65536));
  const backend = await FileBackend.open(`${dir}/d.raw`, { readOnly: true });
  const socketPath = `${dir}/s.sock`;
  const server = await NbdServer.listen(backend, {
    socketPath,
    handshakeTimeoutMs: 1000,
    maxConnections: 2,
  });
  const clients: RawClient[] = [];
  try {
    const a = await RawClient.connect(socketPath);
    const b = await RawClient.connect(socketPath);
    clients.push(a, b);
    await a.handshake(); // a finishes; b says nothing
    await new Promise((r) => setTimeout(r, 50));
    const third = await RawClient.connect(socketPath);
    clients.push(third);
    assertEquals(await third.closedByServer(), true); // over the cap
    assertEquals(await b.closedByServer(), true); // handshake timeout
    const r = await a.read(0, 512);
    assertEquals(r.error, 0);
  } finally {
    for (const c of clients) c.close();
    await server.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hostile client - random bytes after a handshake never hurt the server", async () => {
  await using f = await serve({ readOnly: true });
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 40; i++) {
    const c = await RawClient.connect(f.socket);
    try {
      if (i % 2 === 0) await c.handshake({ structured: i % 4 === 0 });
      else await c.greet();
      const junk = new Uint8Array(Math.floor(rand() * 300));
      for (let k = 0; k < junk.length; k++) junk[k] = Math.floor(rand() * 256);
      // Half the time, start with a valid request magic so decoding goes further.
      if (i % 3 === 0 && junk.length >= 4) junk.set([0x25, 0x60, 0x95, 0x13]);
      await c.send(junk).catch(() => {});
    } finally {
      c.close();
    }
  }
  const r = await RawClient.connect(f.socket);
  try {
    await r.handshake();
    const got = await r.read(1 << 20, 65536);
    sameBytes(got.data, f.contents.subarray(1 << 20, (1 << 20) + 65536), "after the junk");
  } finally {
    r.close();
  }
  sameBytes(await Deno.readFile(f.image), f.contents, "read-only image after the junk");
});

Deno.test("requireTool - a missing client fails with the install command", async () => {
  let message = "";
  try {
    await requireTool("nbd-client-that-does-not-exist");
  } catch (err) {
    message = (err as Error).message;
  }
  assert(message.includes(INSTALL), message);
});

Deno.test("NbdServer.listen - replaces a stale socket but never a live server's", async () => {
  await using f = await serve();
  let err: unknown;
  try {
    await NbdServer.listen(f.backend, { socketPath: f.socket });
  } catch (e) {
    err = e;
  }
  assert(err instanceof Deno.errors.AddrInUse, String(err));
  assertEquals(await tool("nbdinfo", ["--size", f.uri]), `${IMAGE_SIZE}\n`);
  // A socket file nobody answers on (a crashed server's) is taken over.
  const stalePath = `${f.dir}/stale.sock`;
  const crashed = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${JSON.stringify(stalePath)} }); Deno.exit(0);`,
    ],
  }).output();
  assert(crashed.success);
  assert((await Deno.lstat(stalePath)).isSocket, "a process that exits leaves its socket file");
  const second = await NbdServer.listen(f.backend, { socketPath: stalePath });
  try {
    assertEquals(
      await tool("nbdinfo", ["--size", `nbd+unix:///?socket=${stalePath}`]),
      `${IMAGE_SIZE}\n`,
    );
  } finally {
    await second.close();
  }
  await Deno.writeTextFile(`${f.dir}/plain`, "x");
  let notSocket: unknown;
  try {
    await NbdServer.listen(f.backend, { socketPath: `${f.dir}/plain` });
  } catch (e) {
    notSocket = e;
  }
  assert(notSocket instanceof Deno.errors.AlreadyExists, String(notSocket));
});
