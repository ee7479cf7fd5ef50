import { assertEquals } from "../tests/_assert.ts";
import { blake3, initHasher, toHex } from "./hash.ts";
import { BlockTable, decodeManifest, encodeManifest } from "./manifest.ts";
import { memoryChunks, referencedChunks } from "./remote.ts";

await initHasher();

const h = (n: number) => blake3(new Uint8Array([n]));

Deno.test("referencedChunks - the disk's chunks, then the RAM's; each once", () => {
  const disk = new BlockTable(65536, 4 * 65536);
  disk.set(0, h(1));
  disk.set(2, h(2));
  disk.set(3, h(1));
  const ram = new BlockTable(65536, 1 << 20);
  ram.set(1, h(3));
  ram.set(4, h(2)); // the same bytes as a disk block: sent once
  ram.set(9, h(4));
  const diskOnly = decodeManifest(encodeManifest(disk, {}));
  assertEquals(referencedChunks(diskOnly).map(toHex), [h(1), h(2)].map(toHex));
  assertEquals(memoryChunks(diskOnly), []);
  const withMemory = decodeManifest(
    encodeManifest(disk, {}, {
      memory: { table: ram, state: new Uint8Array([1]), machine: { cpus: 1 } },
    }),
  );
  assertEquals(referencedChunks(withMemory).map(toHex), [h(1), h(2), h(3), h(4)].map(toHex));
  assertEquals(memoryChunks(withMemory).map(toHex), [h(3), h(2), h(4)].map(toHex));
});
