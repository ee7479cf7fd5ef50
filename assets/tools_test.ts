import { assert, assertEquals } from "../tests/_assert.ts";
import { ARCH_SPECS } from "./arch.ts";
import {
  buildToolsTree,
  hostToolsRoot,
  parseLibraryList,
  sharedLibraries,
  toolsAgentRunScript,
  toolsCommand,
  toolsInitScript,
} from "./tools.ts";
import { findCommand, hostArch } from "../host/mod.ts";
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

Deno.test("sharedLibraries - the loader and every library Deno needs, by soname, as ldd says", async () => {
  const spec = ARCH_SPECS[hostArch()];
  const libs = new Map(await sharedLibraries(Deno.execPath(), hostToolsRoot(spec)));
  assert(libs.has("libc.so.6"), [...libs.keys()].join(" "));
  assertEquals(libs.get(spec.loader.split("/").pop()!), spec.loader);
  for (const path of libs.values()) assert(path.startsWith("/"), path);
  // ldd, the independent reader, names the same libraries.
  const ldd = new TextDecoder().decode(
    (await new Deno.Command("ldd", { args: [Deno.execPath()], stdout: "piped" }).output()).stdout,
  );
  const named = [...ldd.matchAll(/^\s*(\S+) => \//gm)].map((m) => m[1]!).sort();
  assertEquals([...libs.keys()].filter((n) => !n.startsWith("ld-")).sort(), named);
});

Deno.test("parseLibraryList - the loader's --list under qemu-user: guest paths; a missing one named", () => {
  // qemu-aarch64-static -L ROOT ROOT/usr/lib/ld-linux-aarch64.so.1 --list ROOT/usr/bin/setpriv
  const out = [
    "\t (0x0000005502850000)",
    "\tlibcap-ng.so.0 => /lib/aarch64-linux-gnu/libcap-ng.so.0 (0x00000055028a0000)",
    "\tlibc.so.6 => /lib/aarch64-linux-gnu/libc.so.6 (0x00000055028d0000)",
    "\t/lib/ld-linux-aarch64.so.1 => t/usr/lib/ld-linux-aarch64.so.1 (0x0000005500000000)",
  ].join("\n");
  assertEquals(parseLibraryList("setpriv", out), [
    ["libcap-ng.so.0", "/lib/aarch64-linux-gnu/libcap-ng.so.0"],
    ["libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"],
  ]);
  let err: unknown;
  try {
    parseLibraryList("deno", "\tlibfoo.so.1 => not found\n");
  } catch (e) {
    err = e;
  }
  assert(err instanceof Error && /deno needs a library its root lacks: libfoo/.test(err.message));
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
      busybox: await Deno.readFile(findCommand("busybox")!),
      from: hostToolsRoot(ARCH_SPECS[hostArch()]),
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
