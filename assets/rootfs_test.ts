import { assert, assertEquals } from "../tests/_assert.ts";
import {
  DEBIAN_RECIPE,
  DEFAULT_FS_BYTES,
  guestInitScript,
  imageBytesFor,
  mmdebstrapArgs,
} from "./rootfs.ts";

async function shSyntaxOk(script: string): Promise<boolean> {
  // dash is Debian's /bin/sh, the shell these scripts run under in the guest.
  return (await new Deno.Command("sh", { args: ["-n", "-c", script] }).output()).success;
}

Deno.test("the fallback init is valid sh and hands over to the tools disk", async () => {
  assert(await shSyntaxOk(guestInitScript()));
  assert(guestInitScript().includes("exec /run/shuru/tools/init"));
});

Deno.test("imageBytesFor: at least the default disk, headroom for big trees, whole MiB", () => {
  assertEquals(imageBytesFor(300 * 1024 * 1024), DEFAULT_FS_BYTES);
  const big = imageBytesFor(4000 * 1024 * 1024);
  assert(big > 4000 * 1024 * 1024 * 1.15);
  assertEquals(big % (1024 * 1024), 0);
  assertEquals(imageBytesFor(1, 10 * 1024 * 1024 + 1), 97 * 1024 * 1024);
});

Deno.test("mmdebstrapArgs writes a tar of the recipe", () => {
  const args = mmdebstrapArgs(DEBIAN_RECIPE, "/x/out.tar.partial");
  assert(args.includes("--format=tar"), "format must not depend on the file name");
  assert(args.includes("--variant=minbase"));
  assert(
    args.some((a) => a.startsWith("--include=") && a.includes("tini") && a.includes("python3")),
  );
  assertEquals(args.slice(-2), ["bookworm", "/x/out.tar.partial"]);
});
