/**
 * Runs every benchmark (`bench/*_bench.ts`) in turn, each in its own process so one bench's
 * memory and open files cannot skew the next. `deno task bench` calls this.
 *
 * Usage: `deno run -A bench/mod.ts [NAME...]` (e.g. `nbd store`; default: all).
 *
 * @module
 */

const dir = new URL(".", import.meta.url);
const wanted = new Set(Deno.args);
const benches = [...Deno.readDirSync(dir)]
  .map((e) => e.name)
  .filter((n) => n.endsWith("_bench.ts"))
  .filter((n) => wanted.size === 0 || wanted.has(n.replace(/_bench\.ts$/, "")))
  .sort();

let failed = 0;
for (const name of benches) {
  console.log(`\n== ${name}`);
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(name, dir).pathname],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) {
    failed++;
    console.error(`${name} failed (exit ${status.code})`);
  }
}
if (failed > 0) Deno.exit(1);
