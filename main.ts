/**
 * The `shuru` command-line entry point.
 *
 * @module
 */

import { runCli } from "./cli/mod.ts";

if (import.meta.main) {
  const code = await runCli(Deno.args);
  Deno.exit(code);
}
