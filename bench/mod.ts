/**
 * `deno task bench`: runs every benchmark file in turn, each in its own process so one
 * bench's memory does not skew another's. Pass names to run a subset:
 * `deno task bench nbd store`.
 *
 * Every bench prints its figures as ratios against a reference measured in the same run.
 *
 * @module
 */

const here = new URL(".", import.meta.url);
const all: string[] = [];
for await (const entry of Deno.readDir(here)) {
  if (entry.isFile && entry.name.endsWith("_bench.ts")) all.push(entry.name);
}
all.sort();
const wanted = Deno.args.length > 0
  ? all.filter((f) => Deno.args.some((a) => f.startsWith(a)))
  : all;
let failed = 0;
for (const file of wanted) {
  console.log(`\n=== ${file}`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(file, here).pathname],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) {
    console.log(`!!! ${file} exited with ${code}`);
    failed++;
  }
}
Deno.exit(failed === 0 ? 0 : 1);
