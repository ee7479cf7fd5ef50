import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { LibraryError, libraryPath, staticPointer } from "./platform.ts";

Deno.test("libraryPath - one table per OS", () => {
  assertEquals(libraryPath("libc", "linux"), "libc.so.6");
  assertEquals(libraryPath("libc", "darwin"), "/usr/lib/libSystem.B.dylib");
  assertEquals(libraryPath("objc", "darwin"), "/usr/lib/libobjc.A.dylib");
  assertEquals(
    libraryPath("virtualization", "darwin"),
    "/System/Library/Frameworks/Virtualization.framework/Virtualization",
  );
});

Deno.test("libraryPath - a library the OS lacks is a typed error", () => {
  const err = assertThrows(() => libraryPath("virtualization", "linux"));
  assert(err instanceof LibraryError && err.code === "unsupported_os");
  assertEquals(err.message, "Cannot open the virtualization library: it does not exist on linux");
  assert(assertThrows(() => libraryPath("libc", "windows")) instanceof LibraryError);
});

Deno.test("staticPointer - reads the pointer stored in a C global (libc's environ)", () => {
  // environ is `char **`: the value is the array of "KEY=VALUE" strings.
  const environ = staticPointer("libc", "environ");
  assert(environ !== null);
  const first = new Deno.UnsafePointerView(environ).getPointer(0);
  assert(first !== null);
  const entry = Deno.UnsafePointerView.getCString(first);
  assert(entry.includes("="), entry);
  assert(
    entry in
      Object.fromEntries(Object.entries(Deno.env.toObject()).map(([k, v]) => [`${k}=${v}`, 1])),
  );
});

Deno.test("openLibrary - object runtimes stay mapped after their handle closes", async () => {
  // In a fresh process, so no other test's handle keeps the library loaded. Unpinned, the
  // close unmaps GNUstep and a worker's exit then runs its thread destructors in unmapped code.
  const script = `
    import { openLibrary } from ${JSON.stringify(new URL("./platform.ts", import.meta.url).href)};
    openLibrary("foundation", {}).close();
    const maps = Deno.readTextFileSync("/proc/self/maps");
    console.log(maps.includes("libgnustep-base") ? "mapped" : "unmapped");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assertEquals(text, "mapped", new TextDecoder().decode(out.stderr));
});
