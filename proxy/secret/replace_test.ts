import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { concatBytes } from "../../io/mod.ts";
import { type ReplacePair, StreamReplacer } from "./replace.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function pairs(...p: [string, string][]): ReplacePair[] {
  return p.map(([from, to]) => ({ from: enc.encode(from), to: enc.encode(to) }));
}

/** The reference: whole-buffer, position by position, longest needle first. */
function naiveReplace(input: Uint8Array, list: readonly ReplacePair[]): Uint8Array {
  const out: number[] = [];
  let i = 0;
  outer: while (i < input.length) {
    let best: ReplacePair | undefined;
    for (const p of list) {
      if (i + p.from.length > input.length) continue;
      if (!p.from.every((b, j) => input[i + j] === b)) continue;
      if (best === undefined || p.from.length > best.from.length) best = p;
    }
    if (best !== undefined) {
      out.push(...best.to);
      i += best.from.length;
      continue outer;
    }
    out.push(input[i]!);
    i++;
  }
  return new Uint8Array(out);
}

function runSplit(list: readonly ReplacePair[], input: Uint8Array, cuts: number[]): Uint8Array {
  const r = new StreamReplacer(list);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const cut of [...cuts, input.length]) {
    // Copy the chunk and scribble over it after use: the replacer must not keep views of it.
    const chunk = input.slice(at, cut);
    parts.push(r.push(chunk).slice());
    chunk.fill(0xee);
    assert(r.carryLength < Math.max(1, ...list.map((p) => p.from.length)), "carry is bounded");
    at = cut;
  }
  parts.push(r.flush());
  return concatBytes(parts);
}

Deno.test("StreamReplacer - needle split at every boundary", () => {
  const list = pairs(["PLACEHOLDER-123", "sk-real-value"]);
  const input = enc.encode("Bearer PLACEHOLDER-123 and PLACEHOLDER-12 and PLACEHOLDER-123");
  const expected = "Bearer sk-real-value and PLACEHOLDER-12 and sk-real-value";
  for (let a = 0; a <= input.length; a++) {
    for (let b = a; b <= input.length; b++) {
      assertEquals(dec.decode(runSplit(list, input, [a, b])), expected, `cuts ${a},${b}`);
    }
  }
});

Deno.test("StreamReplacer - one byte at a time", () => {
  const list = pairs(["abc", "X"], ["bcd", "Y"]);
  const input = enc.encode("abcd bcd abbcd aabc");
  const cuts = Array.from({ length: input.length }, (_, i) => i);
  assertEquals(dec.decode(runSplit(list, input, cuts)), "Xd Y abY aX");
});

Deno.test("StreamReplacer - longest needle wins at a position", () => {
  const list = pairs(["ab", "1"], ["abc", "2"], ["a", "3"]);
  const r = new StreamReplacer(list);
  assertEquals(dec.decode(r.replaceWhole(enc.encode("abcabax"))), "213x");
  // Streaming: "ab" at the end of a chunk waits for a possible "abc".
  assertEquals(dec.decode(r.push(enc.encode("xab"))), "x");
  assertEquals(r.carryLength, 2);
  assertEquals(dec.decode(r.push(enc.encode("c"))), "2");
  assertEquals(dec.decode(r.push(enc.encode("ab"))), "");
  assertEquals(dec.decode(r.flush()), "1");
});

Deno.test("StreamReplacer - overlapping needles do not chain", () => {
  // "aa" → "a" must not be rescanned; "aaa" is "aa" + "a".
  const list = pairs(["aa", "a"]);
  assertEquals(dec.decode(new StreamReplacer(list).replaceWhole(enc.encode("aaaaa"))), "aaa");
  const swap = pairs(["x", "y"], ["y", "x"]);
  assertEquals(dec.decode(new StreamReplacer(swap).replaceWhole(enc.encode("xyyx"))), "yxxy");
});

Deno.test("StreamReplacer - the first of two equal needles wins", () => {
  const list = pairs(["k", "1"], ["k", "2"]);
  assertEquals(dec.decode(new StreamReplacer(list).replaceWhole(enc.encode("kk"))), "11");
});

Deno.test("StreamReplacer - no needles passes chunks through untouched", () => {
  const r = new StreamReplacer([]);
  assert(r.isIdentity);
  const chunk = enc.encode("anything");
  assert(r.push(chunk) === chunk);
  assertEquals(r.flush().length, 0);
});

Deno.test("StreamReplacer - output without a match is a view of the chunk", () => {
  const r = new StreamReplacer(pairs(["secret", "x"]));
  const chunk = enc.encode("plain text with no needle");
  const out = r.push(chunk);
  assert(out.buffer === chunk.buffer, "no copy");
  assertEquals(dec.decode(out), "plain text with no needle");
});

Deno.test("StreamReplacer - empty needle is refused", () => {
  assertThrows(
    () => new StreamReplacer([{ from: new Uint8Array(0), to: enc.encode("x") }]),
    "empty needle",
  );
});

Deno.test("StreamReplacer - replacement to empty and to longer", () => {
  const list = pairs(["gone", ""], ["s", "longer-than-needle"]);
  assertEquals(dec.decode(runSplit(list, enc.encode("agoneb s"), [2, 5])), "ab longer-than-needle");
});

Deno.test("StreamReplacer - preservesLength", () => {
  assert(StreamReplacer.preservesLength(pairs(["abc", "xyz"])));
  assert(!StreamReplacer.preservesLength(pairs(["abc", "xy"])));
});

function fuzz(
  rounds: number,
  alphabet: number,
  needleLen: [number, number],
  inputLen: number,
): void {
  // Small alphabets so needles, prefixes of needles and overlaps occur often.
  let seed = 0x5eed + alphabet;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const word = (min: number, max: number) => {
    const len = min + rand(max - min + 1);
    return Uint8Array.from({ length: len }, () => 97 + rand(alphabet));
  };
  for (let round = 0; round < rounds; round++) {
    const list: ReplacePair[] = Array.from({ length: 1 + rand(4) }, () => ({
      from: word(needleLen[0], needleLen[1]),
      to: word(0, 6),
    }));
    const input = word(0, inputLen);
    const cuts = Array.from({ length: rand(6) }, () => rand(input.length + 1)).sort((a, b) =>
      a - b
    );
    const expected = naiveReplace(input, dedupe(list));
    assertEquals(runSplit(list, input, cuts), expected, `round ${round}`);
  }
}

Deno.test("StreamReplacer - random fuzz against a whole-buffer replace, short needles", () => {
  fuzz(10000, 3, [1, 5], 60);
});

Deno.test("StreamReplacer - random fuzz against a whole-buffer replace, long needles", () => {
  fuzz(5000, 4, [3, 12], 200);
});

/** The naive reference keeps the first of equal needles too. */
function dedupe(list: readonly ReplacePair[]): ReplacePair[] {
  const seen = new Set<string>();
  return list.filter((p) => {
    const key = p.from.join(",");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
