import zlib from "node:zlib";
import { assertEquals, assertRejects } from "../../tests/_assert.ts";
import { contentCodingOf, ContentDecoder } from "./content_decoder.ts";
import { concatBytes } from "../../io/mod.ts";

const data = new TextEncoder().encode("some text with a secret in it, ".repeat(5000));

async function decodeAll(
  decoder: ContentDecoder,
  compressed: Uint8Array,
  piece: number,
): Promise<Uint8Array> {
  const out: Uint8Array[] = [];
  const reading = (async () => {
    for await (const p of decoder.output()) out.push(p.slice());
  })();
  for (let i = 0; i < compressed.length; i += piece) {
    await decoder.write(compressed.subarray(i, i + piece));
  }
  decoder.end();
  await reading;
  return concatBytes(out);
}

Deno.test("ContentDecoder - gzip, zlib deflate, raw deflate and br in small pieces", async () => {
  const cases: [Parameters<typeof contentCodingOf>[0], Uint8Array][] = [
    ["gzip", zlib.gzipSync(data)],
    ["x-gzip", zlib.gzipSync(data)],
    ["deflate", zlib.deflateSync(data)],
    ["deflate", zlib.deflateRawSync(data)],
    ["br", zlib.brotliCompressSync(data)],
  ];
  for (const [header, compressed] of cases) {
    for (const piece of [1, 7, 4096]) {
      const coding = contentCodingOf(header);
      if (coding === "identity" || coding === "unsupported") {
        throw new Error(`bad coding ${coding}`);
      }
      assertEquals(
        await decodeAll(new ContentDecoder(coding), compressed, piece),
        data,
        `${header}/${piece}`,
      );
    }
  }
});

Deno.test("ContentDecoder - a corrupt body fails the output", async () => {
  const decoder = new ContentDecoder("gzip");
  const bad = zlib.gzipSync(data).slice();
  bad.fill(0x55, 20, 60);
  await assertRejects(() => decodeAll(decoder, bad, 1024));
});

Deno.test("ContentDecoder - a 128 MiB bomb streams out in bounded pieces", async () => {
  const decoder = new ContentDecoder("br");
  const bomb = zlib.brotliCompressSync(new Uint8Array(128 * 1024 * 1024), {
    params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 },
  });
  let total = 0;
  let largest = 0;
  const reading = (async () => {
    for await (const p of decoder.output()) {
      total += p.length;
      largest = Math.max(largest, p.length);
    }
  })();
  await decoder.write(bomb);
  decoder.end();
  await reading;
  assertEquals(total, 128 * 1024 * 1024);
  assertEquals(largest <= 64 * 1024, true);
});

Deno.test("contentCodingOf - identity, decodable, unsupported", () => {
  assertEquals(contentCodingOf(undefined), "identity");
  assertEquals(contentCodingOf(" Identity "), "identity");
  assertEquals(contentCodingOf("GZIP"), "gzip");
  assertEquals(contentCodingOf("br"), "br");
  assertEquals(contentCodingOf("zstd"), "unsupported");
  assertEquals(contentCodingOf("gzip, br"), "unsupported");
});
