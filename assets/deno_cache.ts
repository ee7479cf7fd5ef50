/**
 * A Deno cache (DENO_DIR) for the guest agent, filled at build time so the agent's first start in
 * every fresh VM finds it warm.
 *
 * `deno run agent.js` parses the 110 KiB bundle for its imports (the result goes to
 * `dep_analysis_cache_v2`), compiles it and the Deno modules it loads lazily (web streams; V8's
 * compiled code goes to `v8_code_cache_v2`); on a fresh disk it also creates those SQLite
 * databases. Under TCG emulation
 * that is about a second of the agent's start (measured: agent start to HELLO 5.4 s → 4.5 s, 6 of
 * 6 interleaved boots faster). The caches are keyed by module URL and source hash, so the host
 * fills them with the same Deno binary at the tree's path, then the rows are renamed to the path
 * the guest runs (`file:///opt/shuru/agent.js`).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { AssetError } from "./errors.ts";
import { runTool } from "./run.ts";

/** Bumped when {@link primeAgentCache} changes what it writes; part of the assets' version. */
export const PRIMING_VERSION = 2;

/** Deno's cache databases (as of Deno 2.9) and the table of each that is keyed by module URL. */
const TABLES = {
  dep_analysis_cache_v2: "moduleinfocache",
  v8_code_cache_v2: "codecache",
  node_analysis_cache_v2: "cjsanalysiscache",
} as const;

/**
 * Run once with the cache so Deno compiles (and caches) the modules the agent loads lazily: web
 * streams (every pipe, port and process stream) and structured clone.
 */
const LAZY_MODULES_SCRIPT = "new ReadableStream();\nstructuredClone(0);\n";

/** Where things are for {@link primeAgentCache}. */
export interface PrimeAgentCacheOptions {
  /** The Deno binary the guest runs (the host's copy of it). */
  denoBinary: string;
  /**
   * A program prefix that runs it, e.g. `["qemu-aarch64-static", "-L", root]` for a foreign
   * architecture (default: none, run directly).
   */
  runner?: readonly string[];
  /** The agent bundle's path inside the guest, e.g. `/opt/shuru/agent.js`. */
  agentPath: string;
  /** The cache folder's path inside the guest, e.g. `/var/cache/shuru/deno`. */
  cacheDir: string;
}

/**
 * Fills `<root><cacheDir>` for the agent at `<root><agentPath>` (already written), as the guest
 * will see them; leaves no SQLite WAL behind.
 *
 * @throws AssetError `command_failed` when Deno cannot run the bundle.
 */
export async function primeAgentCache(
  root: string,
  options: PrimeAgentCacheOptions,
): Promise<void> {
  const dir = join(root, options.cacheDir);
  await Deno.mkdir(dir, { recursive: true });
  const env = { DENO_DIR: dir, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1" };
  const hostAgent = join(root, options.agentPath);
  const argv = [...(options.runner ?? []), options.denoBinary];
  const deno = (args: string[]) => runTool(argv[0]!, [...argv.slice(1), ...args], { env });
  // `--version` prints and returns before the agent touches anything; Deno has scanned the bundle
  // for imports and, as the module's evaluation ends normally, stores its compiled code.
  await deno(["run", "-A", "--no-check", hostAgent, "--version"]);
  const scratch = await Deno.makeTempDir({ prefix: "shuru-prime-" });
  try {
    const script = join(scratch, "lazy_modules.js");
    await Deno.writeTextFile(script, LAZY_MODULES_SCRIPT);
    await deno(["run", "-A", "--no-check", script]);
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
  const hostUrl = pathToFileURL(hostAgent).href;
  const guestUrl = pathToFileURL(options.agentPath).href;
  for (const [name, table] of Object.entries(TABLES)) {
    const file = join(dir, name);
    try {
      // Deno made each database above; opening never creates one (a missing file is an error).
      await Deno.stat(file);
      const db = new DatabaseSync(file);
      try {
        db.prepare(`UPDATE ${table} SET specifier = ? WHERE specifier = ?`).run(guestUrl, hostUrl);
        // Rows for host paths (the scratch script) mean nothing in the guest.
        db.prepare(`DELETE FROM ${table} WHERE specifier LIKE 'file:%' AND specifier <> ?`)
          .run(guestUrl);
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      } finally {
        db.close();
      }
    } catch (e) {
      throw new AssetError(
        "command_failed",
        `Cannot prime the agent's Deno cache: ${file}: ${(e as Error).message} ` +
          "(a Deno version with another cache layout? see assets/deno_cache.ts)",
        { cause: e },
      );
    }
    for (const suffix of ["-wal", "-shm"]) {
      await Deno.remove(file + suffix).catch(() => {});
    }
  }
}

/** The module URLs each cache database in `cacheDir` holds (for tests and diagnostics). */
export function cachedSpecifiers(cacheDir: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, table] of Object.entries(TABLES)) {
    const db = new DatabaseSync(join(cacheDir, name), { readOnly: true });
    try {
      const rows = db.prepare(`SELECT specifier FROM ${table} ORDER BY specifier`).all();
      out[name] = rows.map((r) => String(r.specifier));
    } finally {
      db.close();
    }
  }
  return out;
}
