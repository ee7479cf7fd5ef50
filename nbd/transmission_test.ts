import { assert, assertEquals } from "../tests/_assert.ts";
import { nbdReader } from "./_io.ts";
import { MemoryPipe } from "./_test_utils.ts";
import { FileBackend } from "./file_backend.ts";
import { encodeRequest, type Request, type RequestContext } from "./request.ts";
import { TransmissionSession } from "./transmission.ts";
import { Command, Magic, TransmissionFlag } from "./wire.ts";

const CTX: RequestContext = {
  size: 1 << 20,
  flags: TransmissionFlag.HAS_FLAGS,
  structuredReplies: false,
  baseAllocation: false,
};

function req(type: number, offset: number, length: number, flags = 0): Request {
  return { type, offset, length, flags, cookie: new Uint8Array(8) };
}

Deno.test("TransmissionSession - stops reading when the in-flight budget is spent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbd-tx-" });
  const backend = await FileBackend.open(await makeFile(`${dir}/f.raw`, 1 << 20));
  try {
    const c2s = new MemoryPipe();
    const s2c = new MemoryPipe();
    const session = new TransmissionSession(nbdReader(c2s), s2c, {
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
