import { assertEquals } from "../tests/assert.ts";
import { VERSION } from "./version.ts";

Deno.test("shuru --version - shows the version and the VM backend", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const run = (env: Record<string, string>) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", main, "--version"],
      env,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
  const platform = `${Deno.build.os}-${Deno.build.arch}`;
  const expected = Deno.build.os === "darwin" ? "vz" : "qemu";
  const out = await run({});
  assertEquals(
    new TextDecoder().decode(out.stdout).trim(),
    `${VERSION} (${expected} backend, ${platform})`,
  );
  const qemu = await run({ SHURU_BACKEND: "qemu" });
  assertEquals(
    new TextDecoder().decode(qemu.stdout).trim(),
    `${VERSION} (qemu backend, ${platform})`,
  );
});
