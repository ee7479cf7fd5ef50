import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import { join } from "node:path";
import { cachedSpecifiers, primeAgentCache } from "./deno_cache.ts";
import { AssetError } from "./errors.ts";

const AGENT = "/opt/shuru/agent.js";
const CACHE = "/var/cache/shuru/deno";

async function tree(source: string): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "shuru-prime-test-" });
  await Deno.mkdir(join(root, "opt/shuru"), { recursive: true });
  await Deno.writeTextFile(join(root, AGENT), source);
  return root;
}

Deno.test("primeAgentCache - the bundle's scan and code are filed under the guest's URL, streams compiled, no WAL", async () => {
  // Stands in for the bundle: Deno scans it for imports, then runs it with --version.
  const root = await tree('if (Deno.args[0] === "--version") console.log("0.0.0");\n');
  try {
    await primeAgentCache(root, { denoBinary: Deno.execPath(), agentPath: AGENT, cacheDir: CACHE });
    const dir = join(root, CACHE);
    // Before reading it back: opening a WAL database makes the files again.
    const left = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert(!left.some((n) => n.endsWith("-wal") || n.endsWith("-shm")), left.join(" "));
    const rows = cachedSpecifiers(dir);
    assertEquals(rows.dep_analysis_cache_v2, ["file:///opt/shuru/agent.js"]);
    assert(
      rows.v8_code_cache_v2!.includes("ext:deno_web/06_streams.js"),
      String(rows.v8_code_cache_v2),
    );
    assert(rows.v8_code_cache_v2!.includes("file:///opt/shuru/agent.js"));
    assert(rows.v8_code_cache_v2!.every((s) => !s.startsWith("file:") || s.endsWith(AGENT)));
    assert(
      !Object.values(rows).flat().some((s) => s.includes(root)),
      "a host path left in the cache",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("primeAgentCache - a bundle Deno cannot run fails the build with its error", async () => {
  const root = await tree("this is not JavaScript (\n");
  try {
    const err = await assertRejects(
      () =>
        primeAgentCache(root, { denoBinary: Deno.execPath(), agentPath: AGENT, cacheDir: CACHE }),
      "SyntaxError",
    );
    assert(err instanceof AssetError, String(err));
    assertEquals(err.code, "command_failed");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
