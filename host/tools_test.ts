import { assert, assertEquals } from "../tests/_assert.ts";
import {
  findMissingTools,
  missingPackagesError,
  packagesOf,
  shouldInstallPackages,
} from "./tools.ts";

Deno.test("missingPackagesError - one line naming every missing package in one install command", async () => {
  const missing = packagesOf(
    await findMissingTools([
      { command: "shuru-no-such-tool", package: "pkg-a", purpose: "does a" },
      { command: "shuru-no-such-other", package: "pkg-b", purpose: "does b" },
      { command: "sh", package: "dash", purpose: "is present" },
    ], ""),
  );
  assertEquals(missing.map((m) => m.package), ["pkg-a", "pkg-b"]);
  const err = missingPackagesError([...missing, { package: "pkg-a", what: "again" }]);
  assertEquals(err.code, "missing_host_tools");
  assertEquals(err.packages, ["pkg-a", "pkg-b"]);
  assert(!err.message.includes("\n"), err.message);
  const sudo = Deno.uid() === 0 ? "" : "sudo ";
  assert(
    err.message.includes(`${sudo}apt-get install -y --no-install-recommends pkg-a pkg-b`),
    err.message,
  );
  assert(err.message.includes("shuru-no-such-tool (not found; does a)"), err.message);
});

Deno.test("shouldInstallPackages - root installs unless told not to; a user only when asked", () => {
  assertEquals(
    [[undefined, 0], [false, 0], [true, 0], [undefined, 1000], [true, 1000], [false, 1000]].map((
      [asked, uid],
    ) => shouldInstallPackages(asked as boolean | undefined, uid as number)),
    [true, false, true, false, true, false],
  );
});
