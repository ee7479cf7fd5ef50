/**
 * The Objective-C runtime through Deno FFI: classes, selectors, message sends with one typed
 * entry per method signature, autorelease pools, classes defined at run time (delegates), and
 * the Foundation values the Virtualization framework takes (NSString, NSURL, NSArray, NSData,
 * NSError).
 *
 * **Message sends.** `objc_msgSend` is a trampoline that jumps to the method with the caller's
 * registers untouched, so its C type is whatever the method's is: a call through FFI must use
 * the method's exact signature. Every signature shuru uses is one row of {@linkcode SIGNATURES};
 * on Apple's runtime each row becomes its own `dlopen` alias of `objc_msgSend`, so a wrong row
 * is a type error here rather than a crash there. Variadic methods are never called (arm64 puts
 * variadic arguments on the stack): `arrayWithObjects:count:` instead of `arrayWithObjects:`.
 *
 * **Two runtimes.** {@linkcode appleRuntime} is macOS's (`libobjc.A.dylib`). {@linkcode gnuRuntime}
 * is GCC's (`libobjc4` on Debian), which has no `objc_msgSend`: `objc_msg_lookup(receiver, sel)`
 * returns the method's implementation, called through `Deno.UnsafeFnPointer` with the same table
 * row. Both share every other line of this module, so the tests run the portable part (class and
 * selector lookup, the per-signature call path, pools, run-time classes, the Foundation helpers
 * against GNUstep's Foundation) on Linux. What only Apple's runtime does is listed in
 * docs/macos.md.
 *
 * Memory: every pointer that native code keeps past one call points into an `ArrayBuffer` made
 * with `new ArrayBuffer(n)` (never moved by V8). Objects returned by `+stringWith…`-style methods
 * are autoreleased: run such code inside {@linkcode Objc.withPool}.
 *
 * @module
 */

import { openLibrary } from "./platform.ts";

/** Native types of method arguments and results, as Deno FFI names them. */
type Native = Deno.NativeType;

/**
 * Every method signature shuru sends, without the implicit `self` and `_cmd`.
 * The key reads as `result(arguments)`: `id` is an object pointer, `buf` a pointer to memory we
 * pass (C string, NSError out-parameter, id array), `bool` is BOOL, `u64`/`i64` NSUInteger and
 * NSInteger, `f64` NSTimeInterval. Blocks and selectors travel as `id`.
 */
export const SIGNATURES = {
  "id()": { parameters: [], result: "pointer" },
  "void()": { parameters: [], result: "void" },
  "bool()": { parameters: [], result: "bool" },
  "u64()": { parameters: [], result: "u64" },
  "i64()": { parameters: [], result: "i64" },
  "id(id)": { parameters: ["pointer"], result: "pointer" },
  "void(id)": { parameters: ["pointer"], result: "void" },
  "bool(id)": { parameters: ["pointer"], result: "bool" },
  "id(buf)": { parameters: ["buffer"], result: "pointer" },
  "bool(buf)": { parameters: ["buffer"], result: "bool" },
  "id(u64)": { parameters: ["u64"], result: "pointer" },
  "void(u64)": { parameters: ["u64"], result: "void" },
  "void(i64)": { parameters: ["i64"], result: "void" },
  "void(bool)": { parameters: ["bool"], result: "void" },
  "id(id,id)": { parameters: ["pointer", "pointer"], result: "pointer" },
  "void(id,id)": { parameters: ["pointer", "pointer"], result: "void" },
  "void(id,id,id)": { parameters: ["pointer", "pointer", "pointer"], result: "void" },
  "id(id,bool)": { parameters: ["pointer", "bool"], result: "pointer" },
  "id(i32,bool)": { parameters: ["i32", "bool"], result: "pointer" },
  "id(buf,u64)": { parameters: ["buffer", "u64"], result: "pointer" },
  "void(id,u64)": { parameters: ["pointer", "u64"], result: "void" },
  "bool(id,buf)": { parameters: ["pointer", "buffer"], result: "bool" },
  "id(id,bool,buf)": { parameters: ["pointer", "bool", "buffer"], result: "pointer" },
  "id(id,i64,id)": { parameters: ["pointer", "i64", "pointer"], result: "pointer" },
  "id(id,f64,bool,i64,buf)": {
    parameters: ["pointer", "f64", "bool", "i64", "buffer"],
    result: "pointer",
  },
  // Block invoke functions and run-time methods (-[… enumerateObjectsUsingBlock:] in tests).
  "void(id,u64,buf)": { parameters: ["pointer", "u64", "buffer"], result: "void" },
} as const satisfies Record<
  string,
  { parameters: readonly Native[]; result: Deno.NativeResultType }
>;

/** A row of {@linkcode SIGNATURES}. */
export type Signature = keyof typeof SIGNATURES;
/** The JavaScript arguments of signature `S`. */
export type ArgsOf<S extends Signature> = Deno.ToNativeParameterTypes<
  typeof SIGNATURES[S]["parameters"]
>;
/** The JavaScript result of signature `S`. */
export type ResultOf<S extends Signature> = Deno.FromNativeResultType<
  typeof SIGNATURES[S]["result"]
>;
/** What a callback implementing signature `S` receives after `self`/block (native → JS). */
export type CallbackArgsOf<S extends Signature> = Deno.FromNativeParameterTypes<
  typeof SIGNATURES[S]["parameters"]
>;

/** A non-null native pointer (an object, class, selector or block). */
export type Ptr = Deno.PointerObject;

type AnyFn = (...args: unknown[]) => unknown;

/** What went wrong in the Objective-C layer. */
export type ObjcErrorCode =
  /** A class the code needs is not registered (framework not loaded, OS too old). */
  | "class_missing"
  /** A method returned nil/NO and, where it has one, filled its NSError. */
  | "framework_error"
  /** An operation needs a part of the runtime this one lacks. */
  | "unsupported";

/** An Objective-C call failed; for framework errors `domain`/`errorCode` are the NSError's. */
export class ObjcError extends Error {
  /** Machine-readable reason. */
  readonly code: ObjcErrorCode;
  /** NSError domain (`VZErrorDomain`, `NSPOSIXErrorDomain`, …), when there was an NSError. */
  readonly domain: string | undefined;
  /** NSError code, when there was an NSError. */
  readonly errorCode: number | undefined;
  constructor(
    code: ObjcErrorCode,
    message: string,
    options: { domain?: string; errorCode?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ObjcError";
    this.code = code;
    this.domain = options.domain;
    this.errorCode = options.errorCode;
  }
}

/** The parts of an Objective-C runtime this module builds on. */
export interface ObjcRuntime {
  /** `apple` (libobjc.A) or `gnu` (GCC's libobjc). */
  readonly kind: "apple" | "gnu";
  /** `objc_getClass`: the class, or null when none has that name. */
  getClass(name: string): Deno.PointerValue;
  /** `sel_registerName`. */
  selector(name: string): Ptr;
  /** The function to call as `fn(receiver, selector, ...args)` for a send of signature `sig`. */
  sender(sig: Signature, receiver: Ptr, selector: Ptr): AnyFn;
  /** `objc_allocateClassPair(superclass, name, 0)`; null when the name is taken. */
  allocateClassPair(superclass: Ptr, name: string): Deno.PointerValue;
  /** `class_addMethod`; false when the class already has the method. */
  addMethod(cls: Ptr, selector: Ptr, imp: Ptr, types: string): boolean;
  /** `objc_registerClassPair`. */
  registerClassPair(cls: Ptr): void;
  /** `objc_getProtocol` + `class_addProtocol`; false when the protocol is unknown. */
  addProtocol(cls: Ptr, protocol: string): boolean;
  /** `object_getClassName`. */
  className(object: Ptr): string;
  /** Pushes an autorelease pool; the token goes to {@linkcode ObjcRuntime.popPool}. */
  pushPool(): Ptr;
  /** Drains the pool `token` (and every pool pushed after it). */
  popPool(token: Ptr): void;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s` (for `buffer` parameters; valid during the call). */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function nonNull(p: Deno.PointerValue, what: string): Ptr {
  if (p === null) throw new ObjcError("unsupported", `Cannot ${what}: the runtime returned NULL`);
  return p;
}

/** The C parameter list of a send of `sig`: `self`, `_cmd`, then the method's. */
function sendDefinition(sig: Signature): Deno.ForeignFunction {
  const row = SIGNATURES[sig];
  return { parameters: ["pointer", "pointer", ...row.parameters], result: row.result };
}

/** The ObjC type encoding of a method with signature `sig` (for `class_addMethod`). */
export function typeEncoding(sig: Signature, kind: ObjcRuntime["kind"]): string {
  const row = SIGNATURES[sig];
  const code = (t: Native | "void"): string => {
    switch (t) {
      case "void":
        return "v";
      case "pointer":
        return "@";
      case "buffer":
        return "^v";
      // BOOL is C99 bool on Apple arm64 ("B"), unsigned char in GNU's runtime ("C").
      case "bool":
        return kind === "apple" ? "B" : "C";
      case "u64":
        return "Q";
      case "i64":
        return "q";
      case "i32":
        return "i";
      case "f64":
        return "d";
      default:
        throw new TypeError(`No ObjC type encoding for ${String(t)}`);
    }
  };
  return code(row.result) + "@:" + row.parameters.map(code).join("");
}

/**
 * The `dlopen` symbols of Apple's send path: one alias of `symbol` per {@linkcode SIGNATURES} row,
 * keyed by the row, each with `self` and `_cmd` before the method's parameters.
 */
export function msgSendAliases(symbol = "objc_msgSend"): Record<Signature, Deno.ForeignFunction> {
  const aliases = {} as Record<Signature, Deno.ForeignFunction>;
  for (const sig of Object.keys(SIGNATURES) as Signature[]) {
    aliases[sig] = { name: symbol, ...sendDefinition(sig) };
  }
  return aliases;
}

/** Apple's runtime (`/usr/lib/libobjc.A.dylib`): one `objc_msgSend` alias per signature. */
export function appleRuntime(): ObjcRuntime {
  const base = openLibrary("objc", {
    objc_getClass: { parameters: ["buffer"], result: "pointer" },
    sel_registerName: { parameters: ["buffer"], result: "pointer" },
    objc_allocateClassPair: { parameters: ["pointer", "buffer", "usize"], result: "pointer" },
    class_addMethod: { parameters: ["pointer", "pointer", "pointer", "buffer"], result: "bool" },
    objc_registerClassPair: { parameters: ["pointer"], result: "void" },
    objc_getProtocol: { parameters: ["buffer"], result: "pointer" },
    class_addProtocol: { parameters: ["pointer", "pointer"], result: "bool" },
    object_getClassName: { parameters: ["pointer"], result: "pointer" },
    objc_autoreleasePoolPush: { parameters: [], result: "pointer" },
    objc_autoreleasePoolPop: { parameters: ["pointer"], result: "void" },
  }).symbols;
  const send = openLibrary("objc", msgSendAliases()).symbols as unknown as Record<
    Signature,
    AnyFn
  >;
  return {
    kind: "apple",
    getClass: (name) => base.objc_getClass(cString(name)),
    selector: (name) => nonNull(base.sel_registerName(cString(name)), `register selector ${name}`),
    sender: (sig) => send[sig],
    allocateClassPair: (superclass, name) =>
      base.objc_allocateClassPair(superclass, cString(name), 0n),
    addMethod: (cls, sel, imp, types) => base.class_addMethod(cls, sel, imp, cString(types)),
    registerClassPair: (cls) => base.objc_registerClassPair(cls),
    addProtocol: (cls, name) => {
      const protocol = base.objc_getProtocol(cString(name));
      return protocol !== null && base.class_addProtocol(cls, protocol);
    },
    className: (object) =>
      Deno.UnsafePointerView.getCString(nonNull(base.object_getClassName(object), "class name")),
    pushPool: () => nonNull(base.objc_autoreleasePoolPush(), "push an autorelease pool"),
    popPool: (token) => base.objc_autoreleasePoolPop(token),
  };
}

/**
 * GCC's runtime (`libobjc.so.4`): `objc_msg_lookup` + `Deno.UnsafeFnPointer` per signature.
 * Autorelease pools are Foundation's `NSAutoreleasePool` class (GNUstep), looked up on first use.
 */
export function gnuRuntime(): ObjcRuntime {
  const base = openLibrary("objc", {
    objc_getClass: { parameters: ["buffer"], result: "pointer" },
    sel_registerName: { parameters: ["buffer"], result: "pointer" },
    objc_msg_lookup: { parameters: ["pointer", "pointer"], result: "pointer" },
    objc_allocateClassPair: { parameters: ["pointer", "buffer", "usize"], result: "pointer" },
    class_addMethod: { parameters: ["pointer", "pointer", "pointer", "buffer"], result: "bool" },
    objc_registerClassPair: { parameters: ["pointer"], result: "void" },
    objc_getProtocol: { parameters: ["buffer"], result: "pointer" },
    class_addProtocol: { parameters: ["pointer", "pointer"], result: "bool" },
    object_getClassName: { parameters: ["pointer"], result: "pointer" },
  }).symbols;
  // One UnsafeFnPointer per (implementation, signature): lookups are cached by the runtime,
  // the wrappers by us.
  const fns = new Map<string, AnyFn>();
  const runtime: ObjcRuntime = {
    kind: "gnu",
    getClass: (name) => base.objc_getClass(cString(name)),
    selector: (name) => nonNull(base.sel_registerName(cString(name)), `register selector ${name}`),
    sender: (sig, receiver, selector) => {
      const imp = nonNull(base.objc_msg_lookup(receiver, selector), "look up a method");
      const key = `${Deno.UnsafePointer.value(imp)}/${sig}`;
      let fn = fns.get(key);
      if (!fn) {
        const pointer = new Deno.UnsafeFnPointer(
          imp as Deno.PointerObject<Deno.ForeignFunction>,
          sendDefinition(sig),
        );
        fn = (...args: unknown[]) => (pointer.call as AnyFn)(...args);
        fns.set(key, fn);
      }
      return fn;
    },
    allocateClassPair: (superclass, name) =>
      base.objc_allocateClassPair(superclass, cString(name), 0n),
    addMethod: (cls, sel, imp, types) => base.class_addMethod(cls, sel, imp, cString(types)),
    registerClassPair: (cls) => base.objc_registerClassPair(cls),
    addProtocol: (cls, name) => {
      const protocol = base.objc_getProtocol(cString(name));
      return protocol !== null && base.class_addProtocol(cls, protocol);
    },
    className: (object) =>
      Deno.UnsafePointerView.getCString(nonNull(base.object_getClassName(object), "class name")),
    pushPool: () => {
      const cls = runtime.getClass("NSAutoreleasePool");
      if (cls === null) {
        throw new ObjcError(
          "unsupported",
          "Cannot push an autorelease pool: NSAutoreleasePool is not loaded (open Foundation first)",
        );
      }
      const alloc = runtime.selector("alloc");
      const init = runtime.selector("init");
      const pool = runtime.sender("id()", cls, alloc)(cls, alloc) as Deno.PointerValue;
      const p = nonNull(pool, "allocate an autorelease pool");
      return nonNull(runtime.sender("id()", p, init)(p, init) as Deno.PointerValue, "init a pool");
    },
    popPool: (token) => {
      const drain = runtime.selector("drain");
      runtime.sender("void()", token, drain)(token, drain);
    },
  };
  return runtime;
}

/** A method added to a run-time class: `fn(self, ...args)` implements `selector`. */
export interface MethodSpec<S extends Signature = Signature> {
  /** Selector name, e.g. `guestDidStopVirtualMachine:`. */
  selector: string;
  /** The method's signature (without self and _cmd). */
  signature: S;
  /** The implementation; runs on the thread the runtime calls from. */
  fn: (self: Deno.PointerValue, ...args: CallbackArgsOf<S>) => ResultOf<S>;
}

/** A {@linkcode MethodSpec} of any signature (a union, so object literals type-check by row). */
export type AnyMethodSpec = { [S in Signature]: MethodSpec<S> }[Signature];

/** Options of {@linkcode Objc.defineClass}. */
export interface DefineClassOptions {
  /** Superclass name. @default "NSObject" */
  superclass?: string;
  /** Protocols the class adopts (skipped when the runtime does not know one). */
  protocols?: string[];
}

/** A class defined at run time; its method callbacks live until {@linkcode RuntimeClass.close}. */
export interface RuntimeClass extends Disposable {
  /** The class object. */
  readonly cls: Ptr;
  /** Closes the method callbacks (only once no instance can receive a message any more). */
  close(): void;
}

/** Options of {@linkcode Objc.open}. */
export interface ObjcOpenOptions {
  /** The runtime (default: Apple's on macOS, GNU's elsewhere). */
  runtime?: ObjcRuntime;
  /** Open Foundation too, so NSString & co. are registered (GNUstep on Linux). @default true */
  foundation?: boolean;
}

/** Objective-C from JavaScript over one {@linkcode ObjcRuntime}. */
export class Objc {
  /** The runtime underneath. */
  readonly runtime: ObjcRuntime;
  readonly #selectors = new Map<string, Ptr>();
  readonly #classes = new Map<string, Ptr>();
  // Libraries whose classes must stay registered (closing them would unload the classes).
  readonly #keep: unknown[] = [];

  constructor(runtime: ObjcRuntime) {
    this.runtime = runtime;
  }

  /** Opens the host's runtime (and Foundation). */
  static open(options: ObjcOpenOptions = {}): Objc {
    const runtime = options.runtime ??
      (Deno.build.os === "darwin" ? appleRuntime() : gnuRuntime());
    const objc = new Objc(runtime);
    if (options.foundation ?? true) objc.keepLoaded(openLibrary("foundation", {}));
    return objc;
  }

  /** Keeps `library` open for this object's lifetime (a framework whose classes we use). */
  keepLoaded(library: unknown): void {
    this.#keep.push(library);
  }

  /**
   * The class named `name`.
   *
   * @throws {ObjcError} `class_missing` when it is not registered.
   */
  cls(name: string): Ptr {
    let cls = this.#classes.get(name);
    if (!cls) {
      const found = this.runtime.getClass(name);
      if (found === null) {
        throw new ObjcError(
          "class_missing",
          `Cannot find the Objective-C class ${name}: its framework is not loaded or this OS ` +
            "version lacks it",
        );
      }
      cls = found;
      this.#classes.set(name, cls);
    }
    return cls;
  }

  /** `true` when a class named `name` is registered. */
  hasClass(name: string): boolean {
    return this.#classes.has(name) || this.runtime.getClass(name) !== null;
  }

  /** The selector named `name`. */
  sel(name: string): Ptr {
    let sel = this.#selectors.get(name);
    if (!sel) {
      sel = this.runtime.selector(name);
      this.#selectors.set(name, sel);
    }
    return sel;
  }

  /** Sends `selector` to `receiver` (an object or class) with the method signature `sig`. */
  send<S extends Signature>(
    sig: S,
    receiver: Ptr,
    selector: string,
    ...args: ArgsOf<S>
  ): ResultOf<S> {
    const sel = this.sel(selector);
    return this.runtime.sender(sig, receiver, sel)(receiver, sel, ...args) as ResultOf<S>;
  }

  /** Like {@linkcode Objc.send} for a method returning an object; nil throws. */
  obj<S extends Signature>(sig: S, receiver: Ptr, selector: string, ...args: ArgsOf<S>): Ptr {
    const result = this.send(sig, receiver, selector, ...args) as Deno.PointerValue;
    if (result === null) {
      throw new ObjcError(
        "framework_error",
        `Cannot ${selector.replace(/:$/, "")}: [${this.runtime.className(receiver)} ` +
          `${selector}] returned nil`,
      );
    }
    return result;
  }

  /** `[[Class alloc] init]` (retained: release it or hand it to an owner). */
  create(className: string): Ptr {
    return this.obj("id()", this.obj("id()", this.cls(className), "alloc"), "init");
  }

  /** `[Class alloc]`, for an `init…` with arguments. */
  alloc(className: string): Ptr {
    return this.obj("id()", this.cls(className), "alloc");
  }

  /** `-retain`. */
  retain(object: Ptr): Ptr {
    return this.obj("id()", object, "retain");
  }

  /** `-release`. */
  release(object: Ptr): void {
    this.send("void()", object, "release");
  }

  /** Runs `fn` inside an autorelease pool (drained afterwards, also on throw). */
  withPool<T>(fn: () => T): T {
    const token = this.runtime.pushPool();
    try {
      return fn();
    } finally {
      this.runtime.popPool(token);
    }
  }

  /** An autoreleased NSString holding `s`. */
  str(s: string): Ptr {
    return this.obj("id(buf)", this.cls("NSString"), "stringWithUTF8String:", cString(s));
  }

  /** The text of an NSString (`-UTF8String`); "" for nil. */
  text(nsstring: Deno.PointerValue): string {
    if (nsstring === null) return "";
    const chars = this.send("id()", nsstring, "UTF8String");
    return chars === null ? "" : Deno.UnsafePointerView.getCString(chars);
  }

  /** An autoreleased file NSURL for the absolute path `path`. */
  fileUrl(path: string): Ptr {
    if (!path.startsWith("/")) {
      throw new TypeError(`Cannot make a file URL of ${path}: not absolute`);
    }
    return this.obj("id(id)", this.cls("NSURL"), "fileURLWithPath:", this.str(path));
  }

  /** An autoreleased NSURL parsed from `text` (nil, hence a throw, when malformed). */
  url(text: string): Ptr {
    return this.obj("id(id)", this.cls("NSURL"), "URLWithString:", this.str(text));
  }

  /** An autoreleased NSArray of `items` (`arrayWithObjects:count:`; the runtime retains them). */
  array(items: readonly Ptr[]): Ptr {
    const ids = new BigUint64Array(new ArrayBuffer(Math.max(8, items.length * 8)));
    items.forEach((item, i) => ids[i] = BigInt(Deno.UnsafePointer.value(item)));
    return this.obj(
      "id(buf,u64)",
      this.cls("NSArray"),
      "arrayWithObjects:count:",
      ids,
      BigInt(items.length),
    );
  }

  /** The elements of an NSArray. */
  items(nsarray: Ptr): Ptr[] {
    const count = Number(this.send("u64()", nsarray, "count"));
    const out: Ptr[] = [];
    for (let i = 0; i < count; i++) {
      out.push(this.obj("id(u64)", nsarray, "objectAtIndex:", BigInt(i)));
    }
    return out;
  }

  /** An autoreleased NSData copy of `bytes`. */
  data(bytes: Uint8Array): Ptr {
    const copy = new Uint8Array(new ArrayBuffer(Math.max(1, bytes.length)));
    copy.set(bytes);
    return this.obj(
      "id(buf,u64)",
      this.cls("NSData"),
      "dataWithBytes:length:",
      copy,
      BigInt(bytes.length),
    );
  }

  /** A copy of an NSData's bytes. */
  bytes(nsdata: Ptr): Uint8Array<ArrayBuffer> {
    const length = Number(this.send("u64()", nsdata, "length"));
    if (length === 0) return new Uint8Array(0);
    const start = this.obj("id()", nsdata, "bytes");
    return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(start, length).slice(0));
  }

  /** Domain, code and messages of an NSError. */
  errorInfo(nserror: Ptr): { domain: string; code: number; description: string; reason: string } {
    return {
      domain: this.text(this.send("id()", nserror, "domain")),
      code: Number(this.send("i64()", nserror, "code")),
      description: this.text(this.send("id()", nserror, "localizedDescription")),
      reason: this.text(this.send("id()", nserror, "localizedFailureReason")),
    };
  }

  /** A typed error for an NSError: "Cannot <action>: <the framework's message>". */
  errorFrom(action: string, nserror: Deno.PointerValue): ObjcError {
    if (nserror === null) {
      return new ObjcError("framework_error", `Cannot ${action}: it failed without an NSError`);
    }
    const info = this.errorInfo(nserror);
    const reason = info.reason && !info.description.includes(info.reason)
      ? ` (${info.reason})`
      : "";
    return new ObjcError(
      "framework_error",
      `Cannot ${action}: ${info.description}${reason} [${info.domain} ${info.code}]`,
      { domain: info.domain, errorCode: info.code },
    );
  }

  /**
   * Calls a method taking an `NSError **` as its last argument: `fn` gets the out-parameter
   * buffer; a nil/false result throws the NSError as an {@linkcode ObjcError}.
   */
  check<T>(action: string, fn: (error: Uint8Array<ArrayBuffer>) => T): Exclude<T, false | null> {
    const out = new Uint8Array(new ArrayBuffer(8));
    const result = fn(out);
    if (result === null || result === false) {
      throw this.errorFrom(
        action,
        Deno.UnsafePointer.create(new DataView(out.buffer).getBigUint64(0, true)),
      );
    }
    return result as Exclude<T, false | null>;
  }

  /**
   * Defines (once per process) a subclass whose methods run JavaScript. Class names are
   * process-wide: define each once and route calls by `self` or by argument.
   *
   * @throws {ObjcError} when the name is already taken.
   */
  defineClass(
    name: string,
    methods: AnyMethodSpec[],
    options: DefineClassOptions = {},
  ): RuntimeClass {
    const superclass = this.cls(options.superclass ?? "NSObject");
    const cls = this.runtime.allocateClassPair(superclass, name);
    if (cls === null) {
      throw new ObjcError("unsupported", `Cannot define class ${name}: the name is taken`);
    }
    const callbacks: Deno.UnsafeCallback[] = [];
    for (const method of methods) {
      const row = SIGNATURES[method.signature];
      const definition: Deno.UnsafeCallbackDefinition = {
        parameters: ["pointer", "pointer", ...row.parameters],
        result: row.result,
      };
      const callback = new Deno.UnsafeCallback(
        definition,
        ((self: Deno.PointerValue, _cmd: Deno.PointerValue, ...args: unknown[]) =>
          (method.fn as AnyFn)(self, ...args)) as Deno.UnsafeCallbackFunction,
      );
      callbacks.push(callback);
      const types = typeEncoding(method.signature, this.runtime.kind);
      if (!this.runtime.addMethod(cls, this.sel(method.selector), callback.pointer, types)) {
        for (const c of callbacks) c.close();
        throw new ObjcError("unsupported", `Cannot add method ${method.selector} to ${name}`);
      }
    }
    for (const protocol of options.protocols ?? []) this.runtime.addProtocol(cls, protocol);
    this.runtime.registerClassPair(cls);
    this.#classes.set(name, cls);
    return {
      cls,
      close: () => {
        for (const c of callbacks) c.close();
        callbacks.length = 0;
      },
      [Symbol.dispose]() {
        this.close();
      },
    };
  }
}
