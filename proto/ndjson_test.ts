import { assertEquals, assertRejects } from "../tests/_assert.ts";
import { MAX_JSON_LINE } from "./messages.ts";
import { encodeJsonLine, readJsonLines } from "./ndjson.ts";

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks);
}

async function collect(chunks: Uint8Array[]): Promise<unknown[]> {
  const out = [];
  for await (const v of readJsonLines(streamOf(chunks))) out.push(v);
  return out;
}

Deno.test("readJsonLines - lines split across chunks at every offset", async () => {
  const bytes = new Uint8Array([
    ...encodeJsonLine({ a: 1 }),
    ...encodeJsonLine({ b: "é" }),
    ...encodeJsonLine({ c: [1, 2] }),
  ]);
  for (let i = 0; i <= bytes.length; i++) {
    assertEquals(await collect([bytes.subarray(0, i), bytes.subarray(i)]), [
      { a: 1 },
      { b: "é" },
      { c: [1, 2] },
    ]);
  }
});

Deno.test("readJsonLines - rejects over-long lines, bad JSON, non-objects, truncation", async () => {
  const long = new TextEncoder().encode("x".repeat(MAX_JSON_LINE + 1));
  await assertRejects(() => collect([long]), "longer than");
  await assertRejects(() => collect([new TextEncoder().encode("{nope}\n")]), "not UTF-8 JSON");
  await assertRejects(() => collect([new TextEncoder().encode("[1]\n")]), "not a JSON object");
  await assertRejects(() => collect([new TextEncoder().encode('{"a":1}')]), "mid-line");
});
