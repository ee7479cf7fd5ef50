import { assert, assertEquals } from "../tests/_assert.ts";
import { checkSandboxName, generateSandboxName } from "./names.ts";

Deno.test("generated names are valid and avoid taken ones", () => {
  const taken = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const name = generateSandboxName(taken);
    assertEquals(checkSandboxName(name), undefined);
    assert(!taken.has(name), `duplicate ${name}`);
    taken.add(name);
  }
});

Deno.test("checkSandboxName refuses paths and junk", () => {
  for (const bad of ["", "../x", "a/b", ".hidden", "-x", "x".repeat(49), "a b"]) {
    assert(checkSandboxName(bad) !== undefined, bad);
  }
  assertEquals(checkSandboxName("dev_1.2-x"), undefined);
});
