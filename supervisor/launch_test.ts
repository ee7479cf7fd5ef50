import { assertEquals, assertRejects } from "../tests/assert.ts";
import { readHandedSecrets } from "./launch.ts";

function stdinOf(chunks: Uint8Array[], terminal = false) {
  return {
    readable: ReadableStream.from(chunks),
    isTerminal: () => terminal,
  };
}

Deno.test("readHandedSecrets - reads the pipe to its end; empty or a terminal is none", async () => {
  const enc = new TextEncoder();
  const text = JSON.stringify([{ name: "K", value: "sk-0123456789", hosts: ["a.test"] }]);
  assertEquals(
    await readHandedSecrets(stdinOf([enc.encode(text.slice(0, 9)), enc.encode(text.slice(9))])),
    text,
  );
  assertEquals(await readHandedSecrets(stdinOf([])), undefined);
  assertEquals(await readHandedSecrets(stdinOf([enc.encode(text)], true)), undefined);
});

Deno.test("readHandedSecrets - refuses more than 1 MiB", async () => {
  const big = new Uint8Array(512 * 1024).fill(0x61);
  await assertRejects(() => readHandedSecrets(stdinOf([big, big, big])), "more than 1 MiB");
});
