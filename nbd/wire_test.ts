import { assertEquals } from "../tests/_assert.ts";
import {
  Command,
  commandName,
  ErrorCode,
  errorName,
  flagNames,
  Magic,
  Option,
  optionName,
  OptionReply,
  optionReplyName,
  replyTypeName,
  Size,
  TransmissionFlag,
} from "./wire.ts";

function ascii(x: bigint): string {
  let s = "";
  for (let i = 7; i >= 0; i--) s += String.fromCharCode(Number((x >> BigInt(i * 8)) & 0xffn));
  return s;
}

Deno.test("wire - magics spell their ASCII names", () => {
  assertEquals(ascii(Magic.NBDMAGIC), "NBDMAGIC");
  assertEquals(ascii(Magic.IHAVEOPT), "IHAVEOPT");
});

Deno.test("wire - values match the protocol document", () => {
  assertEquals(Option.GO, 7);
  assertEquals(Option.STRUCTURED_REPLY, 8);
  assertEquals(Option.SET_META_CONTEXT, 10);
  assertEquals(OptionReply.ERR_UNSUP, 2 ** 31 + 1);
  assertEquals(Command.BLOCK_STATUS, 7);
  assertEquals(ErrorCode.ENOSPC, 28);
  assertEquals(TransmissionFlag.CAN_MULTI_CONN, 256);
  assertEquals(Size.REQUEST_HEADER, 4 + 2 + 2 + 8 + 8 + 4);
});

Deno.test("wire - name lookups name known values and flag unknown ones", () => {
  assertEquals(optionName(7), "NBD_OPT_GO");
  assertEquals(optionName(999), "NBD_OPT_UNKNOWN(999)");
  assertEquals(optionReplyName(OptionReply.ERR_INVALID), "NBD_REP_ERR_INVALID");
  assertEquals(commandName(0), "NBD_CMD_READ");
  assertEquals(commandName(42), "NBD_CMD_UNKNOWN(42)");
  assertEquals(errorName(22), "NBD_EINVAL");
  assertEquals(replyTypeName(1), "NBD_REPLY_TYPE_OFFSET_DATA");
});

Deno.test("wire - flagNames lists set bits and shows unknown bits in hex", () => {
  assertEquals(
    flagNames(TransmissionFlag, TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY),
    ["HAS_FLAGS", "READ_ONLY"],
  );
  assertEquals(flagNames(TransmissionFlag, 1 << 15), ["0x8000"]);
});
