/**
 * The shared libraries shuru opens through Deno FFI, per host OS, in one table.
 *
 * Linux names are sonames found through the dynamic linker's cache (Debian packages in
 * `tests/host_packages.txt`); macOS names are absolute paths (system libraries live in the shared
 * cache, so the files need not exist on disk, but `dlopen` of the path works).
 *
 * On Linux the Objective-C entries are GNU's runtime (`libobjc4`), GNUstep's Foundation and the
 * LLVM blocks runtime: they exist so the tests can check `ffi/objc.ts` and `ffi/block.ts` against
 * real runtimes. shuru itself only opens them on macOS.
 *
 * @module
 */

/** Host operating systems shuru's FFI code knows. */
export type HostOs = "linux" | "darwin";

/** Libraries by role. */
export type LibraryName =
  | "libc"
  | "objc"
  | "blocks"
  | "foundation"
  | "coreFoundation"
  | "virtualization";

interface LibraryEntry {
  /** What `Deno.dlopen` gets. */
  path: string;
  /** How to get it when it is missing (shown in the error). */
  install: string;
  /**
   * Never unload it. Object runtimes register per-thread destructors (autorelease pools, the
   * thread's object); when a Deno worker (`deno test`) closes its handles and then exits, those
   * destructors would run in unmapped code and the process dies with SIGSEGV.
   */
  pinned?: true;
}

const FRAMEWORKS = "/System/Library/Frameworks";

/** Every library per OS; absent entries do not exist on that OS. */
export const LIBRARIES: Record<HostOs, Partial<Record<LibraryName, LibraryEntry>>> = {
  linux: {
    libc: { path: "libc.so.6", install: "part of glibc" },
    objc: { path: "libobjc.so.4", install: "apt-get install libobjc4", pinned: true },
    blocks: {
      path: "libBlocksRuntime.so.0",
      install: "apt-get install libblocksruntime0",
      pinned: true,
    },
    foundation: {
      path: "libgnustep-base.so.1.28",
      install: "apt-get install libgnustep-base1.28",
      pinned: true,
    },
  },
  darwin: {
    libc: { path: "/usr/lib/libSystem.B.dylib", install: "part of macOS" },
    objc: { path: "/usr/lib/libobjc.A.dylib", install: "part of macOS" },
    // libSystem re-exports libsystem_blocks (_NSConcreteGlobalBlock, _Block_copy).
    blocks: { path: "/usr/lib/libSystem.B.dylib", install: "part of macOS" },
    foundation: { path: `${FRAMEWORKS}/Foundation.framework/Foundation`, install: "part of macOS" },
    coreFoundation: {
      path: `${FRAMEWORKS}/CoreFoundation.framework/CoreFoundation`,
      install: "part of macOS",
    },
    virtualization: {
      path: `${FRAMEWORKS}/Virtualization.framework/Virtualization`,
      install: "macOS 11 or later",
    },
  },
};

/** A library could not be found or opened. */
export class LibraryError extends Error {
  /** `unsupported_os`: no such library on this OS; `open_failed`: dlopen failed. */
  readonly code: "unsupported_os" | "open_failed";
  constructor(code: LibraryError["code"], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LibraryError";
    this.code = code;
  }
}

/** The OS as the tables know it, or `undefined` for an OS shuru's FFI does not support. */
export function hostOs(os: string = Deno.build.os): HostOs | undefined {
  return os === "linux" || os === "darwin" ? os : undefined;
}

/**
 * The path of library `name` on `os` (default: this host).
 *
 * @throws {LibraryError} `unsupported_os` when the library does not exist there.
 */
export function libraryPath(name: LibraryName, os: string = Deno.build.os): string {
  const known = hostOs(os);
  const entry = known ? LIBRARIES[known][name] : undefined;
  if (!entry) {
    throw new LibraryError(
      "unsupported_os",
      `Cannot open the ${name} library: it does not exist on ${os}`,
    );
  }
  return entry.path;
}

/**
 * `Deno.dlopen` of library `name` with a message that says how to install it.
 *
 * @throws {LibraryError} when it does not exist on this OS or cannot be opened.
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  name: LibraryName,
  symbols: S,
): Deno.DynamicLibrary<S> {
  const path = libraryPath(name);
  try {
    const library = Deno.dlopen(path, symbols);
    const known = hostOs();
    if (known && LIBRARIES[known][name]?.pinned) pin(known, path);
    return library;
  } catch (err) {
    const known = hostOs();
    const install = known ? LIBRARIES[known][name]?.install : undefined;
    throw new LibraryError(
      "open_failed",
      `Cannot open ${path}: ${(err as Error).message}` +
        (install ? ` (${install})` : ""),
      { cause: err },
    );
  }
}

/** `dlopen` flags: RTLD_NOW, and RTLD_NODELETE (its value differs between the two libcs). */
const PIN_FLAGS: Record<HostOs, number> = { linux: 0x2 | 0x1000, darwin: 0x2 | 0x80 };
const pinned = new Set<string>();

/**
 * Opens `path` once more with RTLD_NODELETE through libc, so no later `dlclose` (Deno closes a
 * worker's handles when it ends) unmaps it.
 */
function pin(os: HostOs, path: string): void {
  if (pinned.has(path)) return;
  const libc = Deno.dlopen(libraryPath("libc"), {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
  });
  try {
    const handle = libc.symbols.dlopen(new TextEncoder().encode(`${path}\0`), PIN_FLAGS[os]);
    if (handle === null) throw new Error(`dlopen(RTLD_NODELETE) of ${path} failed`);
    pinned.add(path);
  } finally {
    libc.close();
  }
}

/**
 * The pointer stored in the global variable `symbol` of library `name` (a C `extern T *symbol`,
 * such as `kCFRunLoopDefaultMode` or `NSLocalizedDescriptionKey`).
 *
 * A Deno FFI static of type `pointer` is the variable's *address* (what `&symbol` is in C); this
 * reads the value at that address. Use the static itself where C uses the symbol's address
 * (`_NSConcreteGlobalBlock` as a block's isa).
 */
export function staticPointer(name: LibraryName, symbol: string): Deno.PointerValue {
  // The handle stays open: the value may point into the library's own data.
  const address = openLibrary(name, { value: { name: symbol, type: "pointer" } }).symbols.value;
  return address === null ? null : new Deno.UnsafePointerView(address).getPointer(0);
}
