/**
 * The host side runs on Linux and macOS, so Linux-only assumptions are confined to the modules
 * listed here, each with the reason it may have them. Checked on the text of every non-test
 * `.ts` file (comments left out):
 *
 * - `/proc` appears only in {@linkcode PROC_ALLOWED}: code that runs in the Linux guest, or host
 *   code on a path only Linux takes (QEMU's KVM, building guest images). A host-side question
 *   that needs `/proc` on Linux goes behind a function with a macOS implementation beside it
 *   (as `host/process.ts` does for process start times);
 * - shared libraries are opened only in `ffi/` (`Deno.dlopen`), and their file names
 *   (`libc.so.6`, `libSystem.B.dylib`, frameworks) appear only in `ffi/platform.ts`'s table, so
 *   every library has a name per OS.
 *
 * @module
 */

import { dirname, join, relative } from "node:path";
import { assertEquals } from "./tests/_assert.ts";

/**
 * Files that may mention `/proc`, and why; a folder (ending in `/`) for all of its files. A file
 * that no longer does must leave the list.
 */
export const PROC_ALLOWED: Readonly<Record<string, string>> = {
  "guest/": "the guest agent runs inside the Linux guest",
  "assets/initramfs.ts": "the initramfs script runs inside the guest",
  "assets/rootfs.ts": "the root filesystem's init script runs inside the guest",
  "assets/tools.ts": "the tools disk's scripts run inside the guest",
  "assets/foreign.ts":
    "building a foreign-architecture root filesystem (binfmt_misc, user namespaces) is Linux-only; a Mac fetches a bundle",
  "runner/mod.ts": "the live checkpoint's freeze script runs inside the guest",
  "image/mod.ts": "the guest root filesystem's own /proc mount point",
  "host/process_linux.ts": "Linux's process start times; process_darwin.ts is macOS's",
  "vm/accel.ts": "the KVM probe (KVM is Linux's); macOS uses HVF or VZ",
  "vm/tsc.ts": "the TSC rate QEMU x86_64 guests get on a Linux host",
};

/** Where `Deno.dlopen` may be called. */
const DLOPEN_ALLOWED = "ffi/";
/** The one file that names shared libraries. */
const LIBRARY_TABLE = "ffi/platform.ts";
/** A shared library's file name: a soname or a macOS dylib or framework path. */
const LIBRARY_NAME_RE = /\blib[\w+-]*\.so(\.\d+)*\b|\.dylib\b|\.framework\//;

/** `/proc` itself, not `./process.ts`. */
const PROC_RE = /\/proc\b/;

const ROOT = dirname(new URL(import.meta.url).pathname);

/** Every product `.ts` file below the root: no tests, test helpers, benchmarks or node_modules. */
async function productFiles(dir = ROOT): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const path = join(dir, e.name);
    const rel = relative(ROOT, path);
    if (e.isDirectory) {
      if (rel !== "tests" && rel !== "bench") out.push(...await productFiles(path));
    } else if (
      e.name.endsWith(".ts") && !e.name.endsWith("_test.ts") && e.name !== "_test_utils.ts"
    ) {
      out.push(rel);
    }
  }
  return out.sort();
}

/** The lines of `source` that are code: comment lines and trailing ` // ` comments removed. */
export function codeLines(source: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let inBlock = false;
  source.split("\n").forEach((raw, i) => {
    let text = raw;
    if (inBlock) {
      const end = text.indexOf("*/");
      if (end === -1) return;
      text = text.slice(end + 2);
      inBlock = false;
    }
    const trimmed = text.trimStart();
    if (trimmed.startsWith("//")) return;
    if (trimmed.startsWith("/*")) {
      if (!trimmed.includes("*/")) inBlock = true;
      return;
    }
    const comment = text.indexOf(" // ");
    if (comment !== -1) text = text.slice(0, comment);
    out.push({ line: i + 1, text });
  });
  return out;
}

function allowed(path: string, table: Readonly<Record<string, string>>): boolean {
  return Object.keys(table).some((k) => k.endsWith("/") ? path.startsWith(k) : path === k);
}

/** The portability problems of `files`, one line each (`path:line: what`). */
export function portabilityProblems(
  files: readonly { path: string; source: string }[],
  procAllowed: Readonly<Record<string, string>> = PROC_ALLOWED,
): string[] {
  const problems: string[] = [];
  const procUsers = new Set<string>();
  for (const { path, source } of files) {
    for (const { line, text } of codeLines(source)) {
      if (PROC_RE.test(text)) {
        procUsers.add(path);
        if (!allowed(path, procAllowed)) {
          problems.push(`${path}:${line}: reads /proc on the host side (macOS has none)`);
        }
      }
      if (/\bDeno\.dlopen\(/.test(text) && !path.startsWith(DLOPEN_ALLOWED)) {
        problems.push(`${path}:${line}: Deno.dlopen outside ffi/ (use openLibrary)`);
      }
      if (LIBRARY_NAME_RE.test(text) && path !== LIBRARY_TABLE) {
        problems.push(`${path}:${line}: a library file name outside ${LIBRARY_TABLE}`);
      }
    }
  }
  // A file entry that no longer needs /proc is dropped; a folder (the guest's) stays Linux's.
  for (const key of Object.keys(procAllowed)) {
    if (!key.endsWith("/") && !procUsers.has(key)) {
      problems.push(`${key}: allowed to read /proc but does not (drop it from the list)`);
    }
  }
  return problems;
}

Deno.test("portability - /proc, dlopen and library names stay where the list says", async () => {
  const files = await Promise.all(
    (await productFiles()).map(async (path) => ({
      path,
      source: await Deno.readTextFile(join(ROOT, path)),
    })),
  );
  assertEquals(portabilityProblems(files), []);
});

Deno.test("portability - the checks catch each kind of problem", () => {
  const problems = portabilityProblems([
    {
      path: "host/process.ts",
      source: "const stat = await Deno.readTextFile(`/proc/${pid}/stat`);\n// /proc in a comment\n",
    },
    {
      path: "cli/run.ts",
      source: '/**\n * VmHWM from /proc\n */\nDeno.readTextFileSync("/proc/self/status"); // x\n',
    },
    { path: "guest/agent.ts", source: 'Deno.readTextFileSync("/proc/self/mounts");\n' },
    { path: "host/mod.ts", source: 'export { processId } from "./process.ts";\n' },
    { path: "nbd/file_backend.ts", source: 'return Deno.dlopen("libc.so.6", SYMBOLS);\n' },
    { path: "ffi/objc.ts", source: 'const path = "/usr/lib/libobjc.A.dylib";\n' },
    { path: "ffi/platform.ts", source: 'Deno.dlopen("libc.so.6", {}); // "/proc"\n' },
  ], { "guest/": "the guest", "vm/": "a folder", "vm/tsc.ts": "a stale entry" });
  assertEquals(problems, [
    "host/process.ts:1: reads /proc on the host side (macOS has none)",
    "cli/run.ts:4: reads /proc on the host side (macOS has none)",
    "nbd/file_backend.ts:1: Deno.dlopen outside ffi/ (use openLibrary)",
    "nbd/file_backend.ts:1: a library file name outside ffi/platform.ts",
    "ffi/objc.ts:1: a library file name outside ffi/platform.ts",
    "vm/tsc.ts: allowed to read /proc but does not (drop it from the list)",
  ]);
});
