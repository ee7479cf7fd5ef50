/**
 * The layering of the folders, checked on the import graph of every non-test `.ts` file:
 *
 * - a folder imports only folders below it in {@linkcode LAYERS} (or itself);
 * - no two folders import each other, even through others (checked for subfolders too);
 * - an import into another top-level folder names that folder's `mod.ts` (its public
 *   surface), never a file behind it; tests/ and bench/ may also use a folder's
 *   `_test_utils.ts`;
 * - every folder with code has a place in {@linkcode LAYERS}, and README.md's "How it works"
 *   table lists the same folders in the same order.
 *
 * @module
 */

import { dirname, join, normalize, relative } from "node:path";
import { assertEquals } from "./tests/_assert.ts";

/**
 * The folders from the bottom up: each may import only the ones before it. `.` is the root's
 * own files (`mod.ts`, `main.ts`). Keep README.md's table in this order.
 */
export const LAYERS = [
  "io",
  "ffi",
  "host",
  "proto",
  "guest",
  "nbd",
  "oci",
  "store",
  "proxy",
  "vm",
  "assets",
  "image",
  "spec",
  "agent",
  "runner",
  "control",
  "sdk",
  "supervisor",
  "cli",
  ".",
  "tests",
  "bench",
] as const;

/** Folders that hold no product code and are not in README's table. */
const NOT_IN_README = new Set([".", "tests", "bench"]);

const ROOT = dirname(new URL(import.meta.url).pathname);

/** One import: from a file to a file (paths relative to the root). */
interface Edge {
  from: string;
  to: string;
}

/** Every `.ts` file below the root, except tests and node_modules. */
async function sourceFiles(dir = ROOT): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const path = join(dir, e.name);
    if (e.isDirectory) out.push(...await sourceFiles(path));
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
      out.push(relative(ROOT, path));
    }
  }
  return out.sort();
}

/** Static imports and re-exports at the start of a line, and literal dynamic imports. */
const IMPORT_RE = new RegExp(
  String
    .raw`^(?:import|export)(?:\s+type)?\s*(?:\{[^}]*\}|\*(?:\s+as\s+\w+)?|\w+(?:\s*,\s*\{[^}]*\})?)\s*from\s*["']([^"']+)["']` +
    String.raw`|^import\s*["']([^"']+)["']` +
    String.raw`|\bimport\(\s*["']([^"']+)["']\s*\)`,
  "gm",
);

/** The relative imports of `file` (npm: and node: specifiers are not folders of ours). */
export function importsOf(file: string, source: string): Edge[] {
  const edges: Edge[] = [];
  for (const m of source.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    if (!spec.startsWith(".")) continue;
    edges.push({ from: file, to: normalize(join(dirname(file), spec)) });
  }
  return edges;
}

/** The top-level folder of a path (`.` for the root's own files). */
function top(path: string): string {
  const i = path.indexOf("/");
  return i === -1 ? "." : path.slice(0, i);
}

function rank(folder: string): number {
  return (LAYERS as readonly string[]).indexOf(folder);
}

/** The import graph's violations of the rules in the module doc, one line each. */
export function layeringProblems(edges: readonly Edge[], folders: readonly string[]): string[] {
  const problems: string[] = [];
  for (const f of folders) {
    if (rank(f) === -1) problems.push(`${f}/ has no place in LAYERS (layers_test.ts, README.md)`);
  }
  for (const { from, to } of edges) {
    const a = top(from);
    const b = top(to);
    if (a === b) continue;
    if (rank(a) !== -1 && rank(b) !== -1 && rank(b) > rank(a)) {
      problems.push(`${from} imports ${to}: ${a}/ is below ${b}/ (an upward import)`);
    }
    const testCode = a === "tests" || a === "bench";
    if (
      b !== "." && b !== "tests" && to !== `${b}/mod.ts` &&
      !(testCode && to.endsWith("/_test_utils.ts"))
    ) {
      problems.push(`${from} imports ${to}: past ${b}/mod.ts`);
    }
  }
  problems.push(...folderCycles(edges));
  return problems;
}

/** Folder cycles, at every depth (`proxy/wire` and `proxy/tcp` count as folders too). */
function folderCycles(edges: readonly Edge[]): string[] {
  const graph = new Map<string, Set<string>>();
  for (const { from, to } of edges) {
    const a = dirname(from);
    const b = dirname(to);
    // A folder and its own subfolders are one unit when seen from outside, not from inside.
    if (a === b || b.startsWith(a + "/") || a.startsWith(b + "/")) continue;
    if (!graph.has(a)) graph.set(a, new Set());
    graph.get(a)!.add(b);
    // Also at the top level: runner -> vm, whatever the subfolders.
    if (top(from) !== top(to)) {
      if (!graph.has(top(from))) graph.set(top(from), new Set());
      graph.get(top(from))!.add(top(to));
    }
  }
  const problems: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        problems.push(`folder cycle: ${[...path.slice(path.indexOf(next)), next].join(" -> ")}`);
      } else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return problems;
}

/** The folder column of README.md's "How it works" table, top to bottom. */
export function readmeFolders(readme: string): string[] {
  const section = readme.split(/^## How it works$/m)[1]?.split(/^## /m)[0] ?? "";
  const out: string[] = [];
  for (const line of section.split("\n")) {
    const m = /^\|\s*`([^`]+)\/`\s*\|/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

Deno.test("layers - no upward import, no folder cycle, no import past a mod.ts", async () => {
  const files = await sourceFiles();
  const edges: Edge[] = [];
  for (const file of files) {
    edges.push(...importsOf(file, await Deno.readTextFile(join(ROOT, file))));
  }
  const folders = [...new Set(files.map(top))].sort();
  assertEquals(layeringProblems(edges, folders), []);
});

Deno.test("layers - README's table lists the folders in the layer order", async () => {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const want = LAYERS.filter((f) => !NOT_IN_README.has(f));
  // The table reads from the top layer down.
  assertEquals(readmeFolders(readme), [...want].reverse());
});

Deno.test("layers - the checks catch an upward import, a cycle and a deep import", () => {
  const problems = layeringProblems([
    { from: "vm/qemu.ts", to: "assets/host_tools.ts" },
    { from: "host/home.ts", to: "cli/mod.ts" },
    { from: "cli/run.ts", to: "host/mod.ts" },
  ], ["cli", "host", "vm", "assets"]);
  assertEquals(problems, [
    "vm/qemu.ts imports assets/host_tools.ts: vm/ is below assets/ (an upward import)",
    "vm/qemu.ts imports assets/host_tools.ts: past assets/mod.ts",
    "host/home.ts imports cli/mod.ts: host/ is below cli/ (an upward import)",
    "folder cycle: cli -> host -> cli",
  ]);
  assertEquals(
    importsOf("a/b.ts", 'import { x } from "../c/mod.ts";\n * import { y } from "./doc.ts";\n'),
    [{ from: "a/b.ts", to: "c/mod.ts" }],
  );
});
