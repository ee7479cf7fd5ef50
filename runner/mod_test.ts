import { assertEquals, assertThrows } from "../tests/_assert.ts";
import { checkpointArch } from "./mod.ts";

Deno.test("checkpointArch: a checkpoint boots on its architecture; another --arch is refused", () => {
  assertEquals(checkpointArch("c", "arm64", undefined), "arm64");
  assertEquals(checkpointArch("c", "arm64", "arm64"), "arm64");
  // Manifests from before arm64 guests recorded no architecture: they are x86_64.
  assertEquals(checkpointArch("c", undefined, undefined), "x86_64");
  const err = assertThrows(
    () => checkpointArch("c", "arm64", "x86_64"),
    "Cannot boot checkpoint c",
  );
  assertEquals(err.message.includes("\n"), false);
  assertThrows(() => checkpointArch("c", "mips", undefined), "unknown architecture");
});
