/**
 * Runs every benchmark in turn: `deno run -A bench/mod.ts`.
 *
 * @module
 */

import { benchVmBoot } from "./vm_boot_bench.ts";

if (import.meta.main) {
  await benchVmBoot(5);
}
