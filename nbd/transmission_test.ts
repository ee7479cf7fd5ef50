import { assert, assertEquals } from "../tests/assert.ts";
import { BufferedReader } from "./_io.ts";
import { MemoryPipe } from "./_test_utils.ts";
import { FileBackend } from "./file_backend.ts";
import {
  decodeRequest,
  encodeRequest,
  extentsToDescriptors,
  type Request,
  type RequestContext,
  TransmissionSession,
  validateRequest,
} from "./transmission.ts";
import { Command, CommandFlag, Limit, Magic, TransmissionFlag } from "./wire.ts";

const RW_FLAGS = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH |
  TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES |
  TransmissionFlag.SEND_FAST_ZERO | TransmissionFlag.SEND_DF;
const CTX: RequestContext = {
  size: 1 << 20,
  flags: RW_FLAGS,
  structuredReplies: true,
  baseAllocation: true,
};
const RO_CTX: RequestContext = {
  ...CTX,
  flags: TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY,
};

function req(type: number, offset: number, length: number, flags = 0): Request {
  return { type, offset, length, flags, cookie: new Uint8Array(8) };
}

Deno.test("decodeRequest - round-trips and rejects a bad magic", () => {
  const r = { ...req(Command.WRITE, 2 ** 40 + 5, 4096, CommandFlag.FUA) };
  r.cookie = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const bytes = encodeRequest(r);
  assertEquals(decodeRequest(bytes), r);
  bytes[0] = 0;
  assertEquals(decodeRequest(bytes), null);
  assertEquals(Magic.REQUEST, 0x25609513);
});

Deno.test("validateRequest - every rule, with the error the protocol asks for", () => {
  const size = CTX.size;
  const cases: [string, Request, RequestContext, string | null][] = [
    ["read in range", req(Command.READ, 0, 4096), CTX, null],
    ["read of the last byte", req(Command.READ, size - 1, 1), CTX, null],
    ["read past the end", req(Command.READ, size - 1, 2), CTX, "EINVAL"],
    ["read at a huge offset", req(Command.READ, 2 ** 63, 1), CTX, "EINVAL"],
    ["write past the end", req(Command.WRITE, size, 1), CTX, "ENOSPC"],
    ["write zeroes past the end", req(Command.WRITE_ZEROES, size, 1), CTX, "ENOSPC"],
    ["trim past the end", req(Command.TRIM, size, 1), CTX, "EINVAL"],
    ["zero-length read", req(Command.READ, 0, 0), CTX, "EINVAL"],
    ["zero-length write", req(Command.WRITE, 0, 0), CTX, "EINVAL"],
    ["zero-length block status", req(Command.BLOCK_STATUS, 0, 0), CTX, "EINVAL"],
    ["unknown command", req(99, 0, 1), CTX, "EINVAL"],
    ["NBD_CMD_CACHE (not advertised)", req(Command.CACHE, 0, 1), CTX, "EINVAL"],
    ["unknown flag", req(Command.READ, 0, 1, 1 << 9), CTX, "EINVAL"],
    ["NO_HOLE on a write", req(Command.WRITE, 0, 1, CommandFlag.NO_HOLE), CTX, "EINVAL"],
    ["FUA on a write", req(Command.WRITE, 0, 1, CommandFlag.FUA), CTX, null],
    ["FUA on a read (allowed when SEND_FUA)", req(Command.READ, 0, 1, CommandFlag.FUA), CTX, null],
    ["DF on a read", req(Command.READ, 0, 1, CommandFlag.DF), CTX, null],
    ["DF without SEND_DF", req(Command.READ, 0, 1, CommandFlag.DF), RO_CTX, "EINVAL"],
    [
      "zeroes with NO_HOLE|FAST_ZERO",
      req(Command.WRITE_ZEROES, 0, 1, CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO),
      CTX,
      null,
    ],
    ["write on read-only", req(Command.WRITE, 0, 1), RO_CTX, "EPERM"],
    ["trim on read-only", req(Command.TRIM, 0, 1), RO_CTX, "EPERM"],
    ["zeroes on read-only", req(Command.WRITE_ZEROES, 0, 1), RO_CTX, "EPERM"],
    ["flush with a length", req(Command.FLUSH, 0, 1), CTX, "EINVAL"],
    ["flush", req(Command.FLUSH, 0, 0), CTX, null],
    ["block status without context", req(Command.BLOCK_STATUS, 0, 1), {
      ...CTX,
      baseAllocation: false,
    }, "EINVAL"],
    ["REQ_ONE on block status", req(Command.BLOCK_STATUS, 0, 9, CommandFlag.REQ_ONE), CTX, null],
    ["read over the payload cap", req(Command.READ, 0, Limit.MAX_PAYLOAD + 1), {
      ...CTX,
      size: 2 ** 40,
    }, "EINVAL"],
  ];
  for (const [name, r, ctx, want] of cases) {
    assertEquals(validateRequest(r, ctx)?.error ?? null, want, name);
  }
});

Deno.test("extentsToDescriptors - merges, clips, caps, and never returns nothing", () => {
  const hz = { hole: true, zero: true };
  const d = { hole: false, zero: false };
  assertEquals(
    extentsToDescriptors(
      [{ length: 10, ...d }, { length: 5, ...d }, { length: 100, ...hz }],
      20,
      8,
    ),
    [[15, 0], [5, 3]],
  );
  assertEquals(extentsToDescriptors([{ length: 10, ...d }, { length: 10, ...hz }], 20, 1), [[
    10,
    0,
  ]]);
  assertEquals(extentsToDescriptors([], 7, 8), [[7, 0]]);
  assertEquals(extentsToDescriptors([{ length: 0, ...d }], 7, 8), [[7, 0]]);
});

Deno.test("TransmissionSession - stops reading when the in-flight budget is spent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbd-tx-" });
  const backend = await FileBackend.open(await makeFile(`${dir}/f.raw`, 1 << 20));
  try {
    const c2s = new MemoryPipe();
    const s2c = new MemoryPipe();
    const session = new TransmissionSession(new BufferedReader(c2s), s2c, {
      backend,
      context: { ...CTX, flags: TransmissionFlag.HAS_FLAGS, structuredReplies: false },
      baseAllocationId: 0,
      maxInFlight: 4,
    });
    const ended = session.run();
    s2c.blockWrites(); // a client that does not read its replies
    const N = 50;
    for (let i = 0; i < N; i++) {
      const r = req(Command.READ, i * 4096, 4096);
      r.cookie = new Uint8Array(8).fill(i);
      await c2s.write(encodeRequest(r));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(session.inFlight <= 4, `in flight ${session.inFlight}`);
    assert(c2s.pending >= (N - 5) * 28, `server kept reading: ${c2s.pending} bytes left`);
    s2c.unblockWrites();
    const seen = new Set<number>();
    for (let i = 0; i < N; i++) {
      const h = new DataView((await s2c.readExact(16)).buffer);
      assertEquals(h.getUint32(0), Magic.SIMPLE_REPLY);
      assertEquals(h.getUint32(4), 0);
      seen.add(h.getUint8(8));
      await s2c.readExact(4096);
    }
    assertEquals(seen.size, N);
    c2s.close();
    assertEquals(await ended, "eof");
  } finally {
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

async function makeFile(path: string, size: number): Promise<string> {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + (i >> 12)) & 0xff;
  await Deno.writeFile(path, data);
  return path;
}
