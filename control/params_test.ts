import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { RpcError } from "./errors.ts";
import { Params } from "./params.ts";
import { RpcErrorCode } from "./wire.ts";

/** Asserts `fn` fails as INVALID_PARAMS with a message naming `text`. */
function refuses(fn: () => unknown, text: string): void {
  const err = assertThrows(fn, text);
  assert(err instanceof RpcError, String(err));
  assertEquals([err.code, err.kind], [RpcErrorCode.INVALID_PARAMS, "EINVAL"]);
}

Deno.test("Params - params must be an object (or absent)", () => {
  assertEquals(new Params("ps", undefined).has("x"), false);
  assertEquals(new Params("ps", null).has("x"), false);
  refuses(() => new Params("exec", ["ls"]), "params must be an object");
  refuses(() => new Params("exec", "ls"), "params must be an object");
});

Deno.test("Params - strings: type, length, NUL; paths are non-empty", () => {
  const p = new Params("stat", {
    path: "/tmp",
    empty: "",
    nul: "a\0b",
    n: 3,
    long: "x".repeat(5000),
  });
  assertEquals(p.path("path"), "/tmp");
  refuses(() => p.string("n"), '"n" must be a string');
  refuses(() => p.string("missing"), '"missing" must be a string');
  refuses(() => p.string("nul"), "NUL");
  refuses(() => p.path("empty"), "is empty");
  refuses(() => p.path("long"), "longer than 4096");
  refuses(() => p.string("path", { maxLength: 3 }), "longer than 3");
  assertEquals(p.optString("missing"), undefined);
});

Deno.test("Params - integers: safe, whole, in range", () => {
  const p = new Params("resize", { a: 5, f: 1.5, big: 2 ** 60, s: "5", nan: NaN });
  assertEquals(p.int("a", { min: 1, max: 10 }), 5);
  refuses(() => p.int("f"), "must be an integer");
  refuses(() => p.int("big"), "must be an integer");
  refuses(() => p.int("s"), "must be an integer");
  refuses(() => p.int("nan"), "must be an integer");
  refuses(() => p.int("a", { min: 6 }), "at least 6");
  refuses(() => p.int("a", { max: 4 }), "at most 4");
  assertEquals(p.optInt("missing"), undefined);
});

Deno.test("Params - booleans, enums and string arrays", () => {
  const p = new Params("exec", {
    yes: true,
    word: "true",
    enc: "base64",
    argv: ["ls", "-l"],
    mixed: ["ls", 1],
    nulArg: ["a\0"],
  });
  assertEquals(p.bool("yes", false), true);
  assertEquals(p.bool("missing", true), true);
  refuses(() => p.bool("word", false), "true or false");
  assertEquals(p.optEnum("enc", ["utf8", "base64"] as const), "base64");
  refuses(() => p.optEnum("yes", ["utf8"] as const), "one of utf8");
  assertEquals(p.stringArray("argv", { minLength: 1 }), ["ls", "-l"]);
  refuses(() => p.stringArray("mixed"), "array of strings");
  refuses(() => p.stringArray("nulArg"), "array of strings");
  refuses(() => p.stringArray("argv", { maxLength: 1 }), "at most 1");
  refuses(() => new Params("exec", { argv: [] }).stringArray("argv", { minLength: 1 }), "at least");
});

Deno.test("Params - environment maps: strings only, no '=' or NUL in names, bounded", () => {
  const ok = new Params("exec", { env: { A: "1", B: "" } });
  assertEquals(ok.optStringMap("env", { maxEntries: 4 }), { A: "1", B: "" });
  refuses(() => new Params("exec", { env: { A: 1 } }).optStringMap("env", { maxEntries: 4 }), "A");
  refuses(
    () => new Params("exec", { env: { "A=B": "x" } }).optStringMap("env", { maxEntries: 4 }),
    "A=B",
  );
  refuses(
    () => new Params("exec", { env: ["A"] }).optStringMap("env", { maxEntries: 4 }),
    "object",
  );
  refuses(
    () => new Params("exec", { env: { A: "1", B: "2" } }).optStringMap("env", { maxEntries: 1 }),
    "more than 1",
  );
});

Deno.test("Params - base64 is size-checked before and after decoding", () => {
  const bytes = new Uint8Array([1, 2, 3, 4, 5]);
  const p = new Params("write_file", {
    ok: bytes.toBase64(),
    bad: "not base64!",
    huge: "A".repeat(4 * 1024),
  });
  assertEquals(p.base64("ok", { maxBytes: 5 }), bytes);
  refuses(() => p.base64("ok", { maxBytes: 4 }), "more than 4 bytes");
  refuses(() => p.base64("bad", { maxBytes: 100 }), "not valid base64");
  // Refused from the encoded length alone: nothing that large is decoded.
  refuses(() => p.base64("huge", { maxBytes: 16 }), "more than 16 bytes");
  assertEquals(p.optBase64("missing", { maxBytes: 1 }), undefined);
});
