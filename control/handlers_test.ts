import { assertEquals } from "../tests/_assert.ts";
import { HANDLERS } from "./handlers.ts";
import { METHODS } from "./wire.ts";

Deno.test("HANDLERS - one handler per method initialize advertises, and no other", () => {
  assertEquals(
    Object.keys(HANDLERS).sort(),
    METHODS.filter((m) => m !== "$/cancel").sort(),
  );
});
