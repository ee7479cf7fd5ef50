import { assertEquals } from "../tests/_assert.ts";
import {
  decodeRequest,
  encodeRequest,
  type Request,
  type RequestContext,
  validateRequest,
} from "./request.ts";
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
