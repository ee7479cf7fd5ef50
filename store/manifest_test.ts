import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import {
  BlockTable,
  decodeHeader,
  decodeManifest,
  encodeManifest,
  HEADER_LEN,
  VERSION_MAJOR,
} from "./manifest.ts";
import { blake3, initHasher } from "./hash.ts";

await initHasher();

function sample(): BlockTable {
  // 10 blocks of 64 KiB plus a partial one; blocks 0, 3 and 10 used.
  const t = new BlockTable(65536, 10 * 65536 + 100);
  t.set(0, blake3(new Uint8Array([1])));
  t.set(3, blake3(new Uint8Array([2])));
  t.set(10, blake3(new Uint8Array([3])));
  return t;
}

Deno.test("encodeManifest - round trip keeps table and metadata", () => {
  const t = sample();
  const bytes = encodeManifest(t, { parent: "p", createdAt: 5 });
  const m = decodeManifest(bytes);
  assertEquals(m.header.entryCount, 11);
  assertEquals(m.header.usedCount, 3);
  assertEquals(m.header.diskSize, 10 * 65536 + 100);
  assertEquals(m.table.hashes, t.hashes);
  assertEquals(m.meta, { parent: "p", createdAt: 5 });
  assertEquals(m.table.get(1), null);
  assertEquals(m.table.get(3), t.get(3));
});

Deno.test("encodeManifest - the guest architecture round-trips; a malformed one is refused", () => {
  const m = decodeManifest(encodeManifest(sample(), { arch: "arm64" }));
  assertEquals(m.meta, { arch: "arm64" });
  assertThrows(() => decodeManifest(encodeManifest(sample(), { arch: "../x" })), "arch");
});

Deno.test("encodeManifest - sparse table costs bitmap plus used hashes only", () => {
  const t = new BlockTable(65536, 16 * 2 ** 30);
  t.set(7, blake3(new Uint8Array([9])));
  const bytes = encodeManifest(t);
  assertEquals(bytes.length, HEADER_LEN + 262144 / 8 + 32 + 2);
});

Deno.test("decodeHeader - reads sizes from the header alone", () => {
  const bytes = encodeManifest(sample());
  const h = decodeHeader(bytes.subarray(0, HEADER_LEN));
  assertEquals(h.major, VERSION_MAJOR);
  assertEquals(h.blockSize, 65536);
  assertEquals(h.fileLength, bytes.length);
});

Deno.test("decodeManifest - rejects every single-byte corruption", () => {
  const bytes = encodeManifest(sample(), { parent: "x" });
  for (let i = 0; i < bytes.length; i++) {
    const bad = bytes.slice();
    bad[i]! ^= 0x01;
    assertThrows(() => decodeManifest(bad), "Cannot read the manifest");
  }
});

Deno.test("decodeManifest - rejects truncation and extra bytes", () => {
  const bytes = encodeManifest(sample());
  assertThrows(() => decodeManifest(bytes.subarray(0, bytes.length - 1)), "truncated");
  assertThrows(() => decodeManifest(bytes.subarray(0, 10)), "shorter than the header");
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  assertThrows(() => decodeManifest(longer), "truncated");
});

Deno.test("decodeManifest - rejects bad magic, newer major, unknown flags", () => {
  const bytes = encodeManifest(sample());
  const magic = bytes.slice();
  magic[0] = 0x58;
  assertThrows(() => decodeManifest(magic), "bad magic");
  const major = bytes.slice();
  new DataView(major.buffer).setUint16(8, 2, true);
  assertThrows(() => decodeManifest(major), "version 2.0");
  const flags = bytes.slice();
  new DataView(flags.buffer).setUint32(16, 1, true);
  assertThrows(() => decodeManifest(flags), "unknown flags");
});

Deno.test("decodeManifest - rejects huge sizes before allocating", () => {
  const bytes = encodeManifest(sample()).slice();
  const view = new DataView(bytes.buffer);
  view.setBigUint64(24, 2n ** 60n, true);
  assertThrows(() => decodeHeader(bytes), "disk size");
  view.setBigUint64(24, 65536n, true);
  view.setUint32(20, 3000, true);
  assertThrows(() => decodeHeader(bytes), "block size");
});

Deno.test("decodeManifest - accepts a newer minor version with a longer header", () => {
  // A future minor may add header fields: readers skip to `header length`.
  const t = sample();
  const v1 = encodeManifest(t);
  const extra = 8;
  const out = new Uint8Array(v1.length + extra);
  out.set(v1.subarray(0, HEADER_LEN));
  out.set(v1.subarray(HEADER_LEN), HEADER_LEN + extra);
  const view = new DataView(out.buffer);
  view.setUint16(10, 7, true);
  view.setUint32(12, HEADER_LEN + extra, true);
  view.setBigUint64(56, BigInt(out.length), true);
  out.set(blake3(out.subarray(0, 64), out.subarray(HEADER_LEN + extra)), 64);
  const m = decodeManifest(out);
  assertEquals(m.header.minor, 7);
  assert(m.table.hashes.every((b, i) => b === t.hashes[i]));
});

Deno.test("BlockTable - rejects bad geometry", () => {
  assertThrows(() => new BlockTable(1000, 10), "power of two");
  assertThrows(() => new BlockTable(65536, -1), "disk size");
});

Deno.test("decodeManifest - keeps the image meta of a run --image lineage, drops a malformed one", () => {
  const table = new BlockTable(4096, 4096 * 4);
  const image = { ref: "oci:/x:1", config: "sha256:" + "a".repeat(64), settings: { env: ["A=1"] } };
  const back = decodeManifest(encodeManifest(table, { image }));
  assertEquals(back.meta.image, image);
  const bad = decodeManifest(
    encodeManifest(table, {
      image: { ref: 1, config: "x", settings: [] } as unknown as typeof image,
    }),
  );
  assertEquals(bad.meta.image, undefined);
});
