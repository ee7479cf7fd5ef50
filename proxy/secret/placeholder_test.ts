import { assert, assertEquals } from "../../tests/_assert.ts";
import { makePlaceholder, MIN_RANDOM_CHARS, placeholderPrefix } from "./placeholder.ts";

Deno.test("placeholderPrefix keeps a key's kind: sk-, ghp_, xoxb-; nothing when late or absent", () => {
  assertEquals(placeholderPrefix("sk-proj-abcdef"), "sk-");
  assertEquals(placeholderPrefix("ghp_0123456789"), "ghp_");
  assertEquals(placeholderPrefix("xoxb-1234-5678"), "xoxb-");
  assertEquals(placeholderPrefix("abcdefgh-ijk"), "", "a dash after 8 characters is not a prefix");
  assertEquals(placeholderPrefix("abcdefg-ijk"), "abcdefg-");
  assertEquals(placeholderPrefix("plainvalue"), "");
});

Deno.test("makePlaceholder: prefix, same length as a long value, at least 131 random bits", () => {
  const value = "sk-" + "x".repeat(48);
  const p = makePlaceholder(value);
  assert(p.startsWith("sk-"));
  assertEquals(p.length, value.length);
  assert(/^sk-[A-Za-z0-9]+$/.test(p));
  const short = makePlaceholder("hunter22");
  assertEquals(short.length, MIN_RANDOM_CHARS, "a short value still gets 22 random characters");
});

Deno.test("makePlaceholder: fresh every time and uniform over letters and digits", () => {
  const seen = new Set<string>();
  const counts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const p = makePlaceholder("ghp_value");
    assert(!seen.has(p));
    seen.add(p);
    for (const c of p.slice(4)) counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  assertEquals(counts.size, 62);
  const expected = (2000 * MIN_RANDOM_CHARS) / 62;
  for (const [c, n] of counts) assert(Math.abs(n - expected) < expected * 0.3, `${c}: ${n}`);
});
