import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import { blake3, initHasher } from "./hash.ts";
import { StoreError } from "./errors.ts";
import {
  buildArtifact,
  type ChunkEntry,
  decodeChunk,
  decodeChunkIndex,
  encodeChunk,
  encodeChunkIndex,
  ENCODING,
  ENTRY_SIZE,
  MEDIA,
  parseArtifact,
  parseConfig,
} from "./remote_format.ts";
import { planRuns } from "./remote.ts";

await initHasher();
const BS = 65536;

function entry(seed: number, pack: number, offset: number, length = BS): ChunkEntry {
  return {
    hash: blake3(new Uint8Array([seed, seed >> 8])),
    pack,
    offset,
    length,
    encoding: length === BS ? ENCODING.raw : ENCODING.zstd,
  };
}

const SAMPLE = [entry(1, 0, 0), entry(2, 0, BS, 100), entry(3, 1, 0), entry(4, 0, BS + 100)];
const PACKS = [BS * 2 + 100, BS];

Deno.test("encodeChunkIndex - round trip, sorted by pack and offset", () => {
  const bytes = encodeChunkIndex(SAMPLE, 2);
  assertEquals(bytes.length, 32 + 4 * ENTRY_SIZE);
  const back = decodeChunkIndex(bytes, PACKS, BS);
  assertEquals(back.map((e) => [e.pack, e.offset, e.length]), [
    [0, 0, BS],
    [0, BS, 100],
    [0, BS + 100, BS],
    [1, 0, BS],
  ]);
  assertEquals(back[1]!.hash, SAMPLE[1]!.hash);
});

Deno.test("decodeChunkIndex - refuses every inconsistency with the manifest or itself", () => {
  const good = encodeChunkIndex(SAMPLE, 2);
  const cases: [string, (b: Uint8Array, v: DataView) => unknown, (readonly number[])?][] = [
    ["magic", (b) => b[0] = 0],
    ["version", (_, v) => v.setUint16(8, 2, true)],
    ["header length", (_, v) => v.setUint32(12, 8, true)],
    ["entry size", (_, v) => v.setUint32(16, 8, true)],
    ["names 3 packs", (_, v) => v.setUint32(20, 3, true)],
    ["do not fill", (_, v) => v.setBigUint64(24, 5n, true)],
    ["all-zero hash", (b) => b.fill(0, 32, 64)],
    ["names pack 7", (_, v) => v.setUint32(32 + 32, 7, true)],
    ["unknown encoding", (_, v) => v.setUint8(32 + 44, 9)],
    ["raw but", (_, v) => v.setUint32(32 + 40, BS - 1, true)],
    ["compressed but", (_, v) => v.setUint32(32 + ENTRY_SIZE + 40, BS, true)],
    ["overlaps", (_, v) => v.setUint32(32 + ENTRY_SIZE + 36, 10, true)],
    ["ends past", (b) => b, [BS * 2, BS]],
    ["repeats chunk", (b) => b.copyWithin(32 + ENTRY_SIZE, 32, 64)],
  ];
  for (const [why, mutate, packs] of cases) {
    const b = good.slice();
    mutate(b, new DataView(b.buffer));
    const err = assertThrows(() => decodeChunkIndex(b, packs ?? PACKS, BS), why);
    assert(err instanceof StoreError && err.code === "bad_manifest", why);
  }
  assertThrows(() => decodeChunkIndex(good.subarray(0, 31), PACKS, BS), "too short");
});

Deno.test("encodeChunk - zstd when smaller, raw otherwise; decodeChunk verifies the hash", () => {
  const text = new Uint8Array(BS).fill(65);
  const random = crypto.getRandomValues(new Uint8Array(BS));
  const z = encodeChunk(text);
  assertEquals(z.encoding, ENCODING.zstd);
  assert(z.bytes.length < 100);
  assertEquals(encodeChunk(random).encoding, ENCODING.raw);
  assertEquals(encodeChunk(text, { compress: false }).encoding, ENCODING.raw);
  const e = { hash: blake3(text), pack: 0, offset: 0, length: z.bytes.length, encoding: 1 };
  assertEquals(decodeChunk(e, z.bytes, BS), text);
  const flipped = z.bytes.slice();
  flipped[flipped.length - 2]! ^= 1;
  const err = assertThrows(() => decodeChunk(e, flipped, BS));
  assert(err instanceof StoreError && err.code === "corrupt_chunk", err.message);
  const wrong = { ...e, hash: blake3(random) };
  assertThrows(() => decodeChunk(wrong, z.bytes, BS), "hash to");
  const raw = { hash: blake3(random), pack: 0, offset: 0, length: BS, encoding: 0 };
  assertEquals(decodeChunk(raw, random, BS), random);
  assertThrows(() => decodeChunk(raw, random.subarray(1), BS), "expected 65536");
});

const D = (c: string) => `sha256:${c.repeat(64)}`;

Deno.test("parseArtifact - finds parts by media type; refuses images and other artifacts", () => {
  const parts = {
    config: { mediaType: MEDIA.config, digest: D("1"), size: 10 },
    idx: { mediaType: MEDIA.idx, digest: D("2"), size: 200 },
    chunks: { mediaType: MEDIA.chunks, digest: D("3"), size: 80 },
    packs: [{ mediaType: MEDIA.pack, digest: D("4"), size: BS }],
  };
  const bytes = buildArtifact(parts, { a: "b" });
  assertEquals(parseArtifact(bytes, "", "r"), parts);
  // Unknown layer types (later additions) are ignored, not refused.
  const extra = JSON.parse(new TextDecoder().decode(bytes));
  extra.layers.push({ mediaType: "application/vnd.shuru.memory.v1", digest: D("5"), size: 1 });
  assertEquals(parseArtifact(new TextEncoder().encode(JSON.stringify(extra)), "", "r"), parts);
  const image = {
    schemaVersion: 2,
    mediaType: "application/vnd.docker.distribution.manifest.v2+json",
    config: {
      mediaType: "application/vnd.docker.container.image.v1+json",
      digest: D("1"),
      size: 1,
    },
    layers: [],
  };
  const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  const e1 = assertThrows(() => parseArtifact(enc(image), "", "reg/x:1"), "not a shuru checkpoint");
  assert(e1 instanceof StoreError && e1.code === "not_checkpoint");
  const oci = { ...image, mediaType: "application/vnd.oci.image.manifest.v1+json" };
  oci.config = { ...oci.config, mediaType: "application/vnd.oci.image.config.v1+json" };
  assertThrows(() => parseArtifact(enc(oci), "", "reg/x:1"), "a container image?");
  assertThrows(
    () => parseArtifact(enc({ schemaVersion: 2, manifests: [] }), MEDIA_INDEX, "reg/x:1"),
    "image.index",
  );
  assertThrows(() => parseArtifact(new Uint8Array([1, 2]), "", "r"), "not JSON");
  const twoIdx = JSON.parse(new TextDecoder().decode(bytes));
  twoIdx.layers.push(twoIdx.layers[0]);
  assertThrows(() => parseArtifact(enc(twoIdx), "", "r"), "2 layers of type");
  const badDesc = JSON.parse(new TextDecoder().decode(bytes));
  badDesc.layers[0].digest = "sha256:xyz";
  assertThrows(() => parseArtifact(enc(badDesc), "", "r"), "not a valid descriptor");
});

const MEDIA_INDEX = "application/vnd.oci.image.index.v1+json";

Deno.test("parseConfig - validates the format version (2 with a memory size) and numbers; keeps arch and image", () => {
  const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  const good = {
    formatVersion: 1,
    blockSize: BS,
    diskSize: 10,
    usedBlocks: 1,
    chunks: 1,
    hash: "blake3-256",
    parent: "p",
  };
  assertEquals(parseConfig(enc(good), "r").parent, "p");
  const withArch = parseConfig(enc({ ...good, arch: "arm64", image: "oci:/x:1" }), "r");
  assertEquals([withArch.arch, withArch.image], ["arm64", "oci:/x:1"]);
  // Format 2 is a memory checkpoint: it needs a memory size; 1 must have none.
  const mem = parseConfig(enc({ ...good, formatVersion: 2, memorySize: 1 << 30 }), "r");
  assertEquals([mem.formatVersion, mem.memorySize], [2, 1 << 30]);
  assertThrows(() => parseConfig(enc({ ...good, formatVersion: 2 }), "r"), "bad memorySize");
  assertThrows(
    () => parseConfig(enc({ ...good, formatVersion: 2, memorySize: 1000 }), "r"),
    "bad memorySize",
  );
  assertThrows(() => parseConfig(enc({ ...good, memorySize: 4096 }), "r"), "format version 1");
  assertThrows(
    () => parseConfig(enc({ ...good, formatVersion: 3 }), "r"),
    "has format version 3, this shuru reads 1 and 2",
  );
  assertThrows(() => parseConfig(enc({ ...good, diskSize: -1 }), "r"), "diskSize");
  assertThrows(() => parseConfig(enc({ ...good, hash: "sha256" }), "r"), "hash");
});

Deno.test("planRuns - merges neighbours in a pack, splits on gaps, packs and size", () => {
  const e = (pack: number, offset: number, length = 100) => ({
    hash: new Uint8Array(32),
    pack,
    offset,
    length,
    encoding: 1,
  });
  const runs = planRuns(
    [e(0, 0), e(0, 100), e(0, 300), e(0, 10_000), e(1, 0), e(1, 100, 50)],
    { maxGap: 1000, maxRun: 10_000 },
  );
  assertEquals(runs.map((r) => r.map((x) => `${x.pack}:${x.offset}`)), [
    ["0:0", "0:100", "0:300"],
    ["0:10000"],
    ["1:0", "1:100"],
  ]);
  const big = planRuns([e(0, 0, 6000), e(0, 6000, 6000)], { maxRun: 10_000 });
  assertEquals(big.length, 2);
});
