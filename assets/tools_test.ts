import { assert, assertEquals } from "../tests/_assert.ts";
import {
  buildToolsTree,
  sharedLibraries,
  toolsAgentRunScript,
  toolsCommand,
  toolsInitScript,
} from "./tools.ts";
import { findCommand } from "../host/mod.ts";
import { TOOLS_MOUNT } from "./guest_paths.ts";

async function busyboxSyntaxOk(script: string): Promise<boolean> {
  return (await new Deno.Command("busybox", { args: ["sh", "-n", "-c", script] }).output()).success;
}

Deno.test("the tools disk's init and agent runner are valid busybox sh run from the disk", async () => {
  for (const script of [toolsInitScript(), toolsAgentRunScript()]) {
    assert(await busyboxSyntaxOk(script), script);
    assert(script.startsWith(`#!${TOOLS_MOUNT}/bin/sh\n`));
  }
  assert(toolsInitScript().includes(`exec ${TOOLS_MOUNT}/bin/tini -s -- ${TOOLS_MOUNT}/agent-run`));
  assert(toolsAgentRunScript().includes(`${toolsCommand("deno").join(" ")} run -A --no-check`));
});

Deno.test("sharedLibraries - the loader and every library Deno needs, by soname", async () => {
  const libs = new Map(await sharedLibraries(Deno.execPath()));
  assert(libs.has("ld-linux-x86-64.so.2") && libs.has("libc.so.6"), [...libs.keys()].join(" "));
  for (const path of libs.values()) assert(path.startsWith("/"), path);
});

Deno.test("the tools tree runs Deno and setpriv in a root with nothing else (chroot)", async () => {
  const root = await Deno.makeTempDir({ prefix: "shuru-tools-test-" });
  try {
    const bundle = new TextEncoder().encode(
      'if (Deno.args[0] === "--version") console.log("0");\n',
    );
    await buildToolsTree(root, {
      denoBinary: Deno.execPath(),
      agentBundle: bundle,
      busybox: findCommand("busybox")!,
      tini: findCommand("tini-static")!,
    });
    const chroot = async (argv: string[]) => {
      const out = await new Deno.Command("chroot", {
        args: [root, ...argv],
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      const dec = new TextDecoder();
      assert(out.success, `${argv.join(" ")}: ${dec.decode(out.stderr)}`);
      return dec.decode(out.stdout).trim();
    };
    assertEquals(
      await chroot([...toolsCommand("deno"), "eval", "console.log(Deno.version.deno)"]),
      Deno.version.deno,
    );
    assertEquals(
      await chroot([
        ...toolsCommand("setpriv"),
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        "--",
        `${TOOLS_MOUNT}/bin/busybox`,
        "id",
      ]),
      "uid=1000 gid=1000",
    );
    // The agent's cache was filled at the guest path.
    const cache = await Array.fromAsync(Deno.readDir(`${root}${TOOLS_MOUNT}/deno-cache`));
    assert(cache.some((e) => e.name === "v8_code_cache_v2"), cache.map((e) => e.name).join(" "));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
