import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { nbdReader } from "./_io.ts";
import { Bytes, MemoryPipe } from "./_test_utils.ts";
import { NbdProtocolError } from "./errors.ts";
import { decodeString, type ExportOffer, type Negotiated, serverHandshake } from "./handshake.ts";
import {
  ClientFlag,
  InfoType,
  Limit,
  Magic,
  Option,
  OptionReply,
  optionReplyName,
  TransmissionFlag,
} from "./wire.ts";

const OFFER: ExportOffer = {
  names: ["", "disk"],
  listName: "disk",
  size: 1 << 20,
  flags: TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH,
  blockStatus: true,
};

interface Harness {
  c2s: MemoryPipe;
  s2c: MemoryPipe;
  result: Promise<Negotiated | null>;
}

async function start(
  clientFlags: number = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES,
  offer = OFFER,
): Promise<Harness> {
  const c2s = new MemoryPipe();
  const s2c = new MemoryPipe();
  const result = serverHandshake(nbdReader(c2s), s2c, offer);
  result.catch(() => {}); // tests that expect a rejection await it themselves
  const greeting = new DataView((await s2c.readExact(18)).buffer);
  assertEquals(greeting.getBigUint64(0), Magic.NBDMAGIC);
  assertEquals(greeting.getBigUint64(8), Magic.IHAVEOPT);
  assertEquals(greeting.getUint16(16), 3); // FIXED_NEWSTYLE | NO_ZEROES
  await c2s.write(new Bytes().u32(clientFlags).build());
  return { c2s, s2c, result };
}

function option(opt: number, data: Uint8Array = new Uint8Array()): Uint8Array {
  return new Bytes().u64(Magic.IHAVEOPT).u32(opt).u32(data.length).raw(data).build();
}

function goData(name: string, infos: number[] = []): Uint8Array {
  const b = new Bytes().u32(new TextEncoder().encode(name).length).str(name).u16(infos.length);
  for (const i of infos) b.u16(i);
  return b.build();
}

function metaData(name: string, queries: string[]): Uint8Array {
  const b = new Bytes().u32(name.length).str(name).u32(queries.length);
  for (const q of queries) b.u32(q.length).str(q);
  return b.build();
}

interface Reply {
  option: number;
  type: number;
  data: Uint8Array;
}

async function reply(h: Harness): Promise<Reply> {
  const v = new DataView((await h.s2c.readExact(20)).buffer);
  assertEquals(v.getBigUint64(0), Magic.OPTION_REPLY);
  const len = v.getUint32(16);
  return { option: v.getUint32(8), type: v.getUint32(12), data: await h.s2c.readExact(len) };
}

async function expectType(h: Harness, type: number): Promise<Reply> {
  const r = await reply(h);
  assertEquals(optionReplyName(r.type), optionReplyName(type));
  return r;
}

Deno.test("handshake - NBD_OPT_GO on the default export sends INFO, BLOCK_SIZE, ACK", async () => {
  const h = await start();
  await h.c2s.write(option(Option.GO, goData("", [InfoType.NAME])));
  const info = await expectType(h, OptionReply.INFO);
  const v = new DataView(info.data.buffer);
  assertEquals(v.getUint16(0), InfoType.EXPORT);
  assertEquals(Number(v.getBigUint64(2)), OFFER.size);
  assertEquals(v.getUint16(10), OFFER.flags);
  const name = await expectType(h, OptionReply.INFO);
  assertEquals(new DataView(name.data.buffer).getUint16(0), InfoType.NAME);
  const bs = await expectType(h, OptionReply.INFO);
  const bv = new DataView(bs.data.buffer);
  assertEquals(bv.getUint16(0), InfoType.BLOCK_SIZE);
  assertEquals([bv.getUint32(2), bv.getUint32(6), bv.getUint32(10)], [1, 4096, Limit.MAX_PAYLOAD]);
  const ack = await expectType(h, OptionReply.ACK);
  assertEquals(ack.option, Option.GO);
  const n = await h.result;
  assertEquals(n?.exportName, "");
  assertEquals(n?.structuredReplies, false);
});

Deno.test("handshake - unknown export on NBD_OPT_GO is ERR_UNKNOWN and haggling continues", async () => {
  const h = await start();
  await h.c2s.write(option(Option.GO, goData("nope")));
  await expectType(h, OptionReply.ERR_UNKNOWN);
  await h.c2s.write(option(Option.INFO, goData("disk")));
  await expectType(h, OptionReply.INFO);
  await expectType(h, OptionReply.INFO);
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.ABORT));
  await expectType(h, OptionReply.ACK);
  assertEquals(await h.result, null);
});

Deno.test("handshake - NBD_OPT_LIST lists the named export; data makes it ERR_INVALID", async () => {
  const h = await start();
  await h.c2s.write(option(Option.LIST));
  const s = await expectType(h, OptionReply.SERVER);
  assertEquals(new TextDecoder().decode(s.data.subarray(4)), "disk");
  assertEquals(new DataView(s.data.buffer).getUint32(0), 4);
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.LIST, new Uint8Array([1])));
  await expectType(h, OptionReply.ERR_INVALID);
  h.c2s.close();
  assertEquals(await h.result, null);
});

Deno.test("handshake - structured replies, then base:allocation via SET_META_CONTEXT", async () => {
  const h = await start();
  await h.c2s.write(option(Option.SET_META_CONTEXT, metaData("", ["base:allocation"])));
  await expectType(h, OptionReply.ERR_INVALID); // structured replies first
  await h.c2s.write(option(Option.STRUCTURED_REPLY));
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.STRUCTURED_REPLY));
  await expectType(h, OptionReply.ERR_INVALID); // only once
  await h.c2s.write(option(Option.LIST_META_CONTEXT, metaData("", ["base:"])));
  const listed = await expectType(h, OptionReply.META_CONTEXT);
  assertEquals(new DataView(listed.data.buffer).getUint32(0), 0);
  assertEquals(new TextDecoder().decode(listed.data.subarray(4)), "base:allocation");
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.SET_META_CONTEXT, metaData("", ["x-other:thing"])));
  await expectType(h, OptionReply.ACK); // no match: nothing selected
  await h.c2s.write(option(Option.SET_META_CONTEXT, metaData("", ["base:allocation"])));
  const set = await expectType(h, OptionReply.META_CONTEXT);
  assert(new DataView(set.data.buffer).getUint32(0) !== 0);
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.GO, goData("")));
  await expectType(h, OptionReply.INFO);
  await expectType(h, OptionReply.INFO);
  await expectType(h, OptionReply.ACK);
  const n = await h.result;
  assertEquals(n?.structuredReplies, true);
  assert(n?.baseAllocationId !== null);
  assertEquals((n!.flags & TransmissionFlag.SEND_DF) !== 0, true);
});

Deno.test("handshake - no base:allocation when the backend has no block status", async () => {
  const h = await start(undefined, { ...OFFER, blockStatus: false });
  await h.c2s.write(option(Option.STRUCTURED_REPLY));
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.SET_META_CONTEXT, metaData("", ["base:allocation"])));
  await expectType(h, OptionReply.ACK);
  await h.c2s.write(option(Option.ABORT));
  await expectType(h, OptionReply.ACK);
  assertEquals(await h.result, null);
});

Deno.test("handshake - unsupported options get ERR_UNSUP", async () => {
  const h = await start();
  for (const opt of [Option.STARTTLS, Option.EXTENDED_HEADERS, 999]) {
    await h.c2s.write(option(opt));
    const r = await expectType(h, OptionReply.ERR_UNSUP);
    assertEquals(r.option, opt);
  }
  h.c2s.close();
  assertEquals(await h.result, null);
});

Deno.test("handshake - malformed GO payloads are ERR_INVALID", async () => {
  const h = await start();
  // Name length larger than the payload.
  await h.c2s.write(option(Option.GO, new Bytes().u32(100).str("abc").u16(0).build()));
  await expectType(h, OptionReply.ERR_INVALID);
  // Name with a NUL byte.
  await h.c2s.write(option(Option.GO, new Bytes().u32(2).u8(0x61).u8(0).u16(0).build()));
  await expectType(h, OptionReply.ERR_INVALID);
  // Info count not matching the bytes that follow.
  await h.c2s.write(option(Option.GO, new Bytes().u32(0).u16(3).u16(1).build()));
  await expectType(h, OptionReply.ERR_INVALID);
  // Invalid UTF-8.
  await h.c2s.write(option(Option.GO, new Bytes().u32(1).u8(0xff).u16(0).build()));
  await expectType(h, OptionReply.ERR_INVALID);
  h.c2s.close();
  assertEquals(await h.result, null);
});

Deno.test("handshake - NBD_OPT_EXPORT_NAME replies size and flags, with or without zeroes", async () => {
  for (const noZeroes of [true, false]) {
    const flags = ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0);
    const h = await start(flags);
    await h.c2s.write(option(Option.EXPORT_NAME, new TextEncoder().encode("disk")));
    const n = await h.result;
    assertEquals(n?.exportName, "disk");
    const r = new DataView((await h.s2c.readExact(10)).buffer);
    assertEquals(Number(r.getBigUint64(0)), OFFER.size);
    assertEquals(r.getUint16(8), OFFER.flags);
    assertEquals(h.s2c.pending, noZeroes ? 0 : 124);
  }
});

Deno.test("handshake - framing violations end the connection", async (t) => {
  const cases: [string, (h: Harness) => Promise<void>, string][] = [
    ["unknown export on EXPORT_NAME", async (h) => {
      await h.c2s.write(option(Option.EXPORT_NAME, new TextEncoder().encode("nope")));
    }, "UNKNOWN_EXPORT"],
    ["bad option magic", async (h) => {
      await h.c2s.write(new Bytes().u64(0x1234n).u32(Option.LIST).u32(0).build());
    }, "BAD_MAGIC"],
    ["option length over the cap (payload never sent)", async (h) => {
      await h.c2s.write(
        new Bytes().u64(Magic.IHAVEOPT).u32(Option.GO).u32(0xffffffff).build(),
      );
    }, "OPTION_TOO_LONG"],
    ["too many options", async (h) => {
      for (let i = 0; i <= Limit.MAX_OPTIONS; i++) await h.c2s.write(option(999));
    }, "TOO_MANY_OPTIONS"],
    ["stream ends inside an option", async (h) => {
      await h.c2s.write(new Bytes().u64(Magic.IHAVEOPT).u32(Option.GO).u32(50).u32(0).build());
      h.c2s.close();
    }, "SHORT_READ"],
  ];
  for (const [name, act, code] of cases) {
    await t.step(name, async () => {
      const h = await start();
      await act(h);
      const err = await assertRejects(() => h.result);
      assert(err instanceof NbdProtocolError, String(err));
      assertEquals(err.code, code);
    });
  }
  await t.step("unknown client flags", async () => {
    const c2s = new MemoryPipe();
    const s2c = new MemoryPipe();
    const result = serverHandshake(nbdReader(c2s), s2c, OFFER);
    await c2s.write(new Bytes().u32(0x80).build());
    const err = await assertRejects(() => result);
    assertEquals((err as NbdProtocolError).code, "BAD_CLIENT_FLAGS");
  });
});

Deno.test("decodeString - rejects NUL, bad UTF-8 and overlong strings", () => {
  assertEquals(decodeString(new TextEncoder().encode("disk")), "disk");
  assertEquals(decodeString(new Uint8Array([0x61, 0])), null);
  assertEquals(decodeString(new Uint8Array([0xc3])), null);
  assertEquals(decodeString(new Uint8Array(Limit.MAX_STRING + 1).fill(0x61)), null);
  assertEquals(decodeString(new Uint8Array(Limit.MAX_STRING).fill(0x61))?.length, 4096);
});
