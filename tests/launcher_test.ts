/**
 * The `./shuru` launcher's choice of Deno binary, run for real with a simulated OS
 * (`SHURU_LAUNCHER_OS`): on macOS the copy `shuru init` signed for this Deno version, when it
 * exists; the checkout's Deno otherwise.
 */

import { join } from "node:path";
import { assertEquals } from "./assert.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const PLAIN = join(ROOT, "node_modules/.bin/deno");
const VERSION = JSON.parse(
  await Deno.readTextFile(join(ROOT, "node_modules/deno/package.json")),
).version as string;

/** The binary the launcher would run with `env` (nothing else inherited but PATH). */
async function chosen(env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(join(ROOT, "shuru"), {
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", SHURU_LAUNCHER_PRINT: "1", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

async function withSigned<T>(fn: (home: string, signed: string) => Promise<T>): Promise<T> {
  const home = await Deno.makeTempDir({ prefix: "shuru-launcher-" });
  try {
    await Deno.mkdir(join(home, "bin"));
    const signed = join(home, "bin", `deno-${VERSION}-vz`);
    await Deno.writeTextFile(signed, "");
    await Deno.chmod(signed, 0o755);
    return await fn(home, signed);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test("launcher - macOS runs the signed copy for this Deno version", async () => {
  await withSigned(async (home, signed) => {
    assertEquals(await chosen({ SHURU_LAUNCHER_OS: "Darwin", SHURU_HOME: home }), signed);
    // The data home as cli/home.ts finds it: XDG_DATA_HOME/shuru, else HOME/.local/share/shuru.
    const xdg = await Deno.makeTempDir();
    try {
      await Deno.symlink(home, join(xdg, "shuru"));
      assertEquals(
        await chosen({ SHURU_LAUNCHER_OS: "Darwin", XDG_DATA_HOME: xdg, HOME: "/nonexistent" }),
        join(xdg, "shuru", "bin", `deno-${VERSION}-vz`),
      );
      await Deno.mkdir(join(xdg, ".local/share"), { recursive: true });
      await Deno.symlink(home, join(xdg, ".local/share/shuru"));
      assertEquals(
        await chosen({ SHURU_LAUNCHER_OS: "Darwin", HOME: xdg }),
        join(xdg, ".local/share/shuru", "bin", `deno-${VERSION}-vz`),
      );
    } finally {
      await Deno.remove(xdg, { recursive: true });
    }
  });
});

Deno.test("launcher - the checkout's Deno otherwise", async () => {
  await withSigned(async (home, signed) => {
    // Not macOS: never the signed copy.
    assertEquals(await chosen({ SHURU_LAUNCHER_OS: "Linux", SHURU_HOME: home }), PLAIN);
    // Not executable, or signed for another Deno version: the plain binary.
    await Deno.chmod(signed, 0o644);
    assertEquals(await chosen({ SHURU_LAUNCHER_OS: "Darwin", SHURU_HOME: home }), PLAIN);
    await Deno.chmod(signed, 0o755);
    await Deno.rename(signed, join(home, "bin", "deno-0.0.1-vz"));
    assertEquals(await chosen({ SHURU_LAUNCHER_OS: "Darwin", SHURU_HOME: home }), PLAIN);
  });
});
