/**
 * Tests of the Objective-C layer against real runtimes on Linux: GCC's runtime (`libobjc4`) for
 * classes, selectors, the per-signature send path and run-time classes, and GNUstep's Foundation
 * (`libgnustep-base1.28`) for the NSString/NSURL/NSArray/NSData/NSError helpers and autorelease
 * pools. Apple's runtime itself only runs on a Mac (tests/macos/smoke.sh).
 */

import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import {
  gnuRuntime,
  msgSendAliases,
  Objc,
  ObjcError,
  type Ptr,
  type Signature,
  SIGNATURES,
  typeEncoding,
} from "./objc.ts";
import { LIBRARIES, staticPointer } from "./platform.ts";

/** Runs `fn`, expecting it to throw an ObjcError, and returns it. */
function throwsObjc(fn: () => unknown): ObjcError {
  const err = assertThrows(fn);
  assert(err instanceof ObjcError, `expected an ObjcError, got ${err}`);
  return err;
}

let shared: Objc | undefined;
/** One Objc over GNU's runtime and GNUstep's Foundation for all tests (classes are global). */
function objc(): Objc {
  shared ??= Objc.open({ runtime: gnuRuntime() });
  return shared;
}

Deno.test("Objc - classes and selectors come from the runtime", () => {
  const o = objc();
  const cls = o.cls("NSString");
  assertEquals(o.runtime.className(cls), "NSString");
  // The same name registers the same selector.
  assertEquals(
    Deno.UnsafePointer.value(o.runtime.selector("UTF8String")),
    Deno.UnsafePointer.value(o.sel("UTF8String")),
  );
  assert(!o.hasClass("VZVirtualMachine"));
});

Deno.test("Objc - a missing class is a typed error naming it", () => {
  const err = throwsObjc(() => objc().cls("VZVirtualMachine"));
  assertEquals(err.code, "class_missing");
  assert(err.message.startsWith("Cannot find the Objective-C class VZVirtualMachine"));
});

Deno.test("Objc - NSString round trip (UTF-8 in, UTF-8 out, UTF-16 length)", () => {
  const o = objc();
  o.withPool(() => {
    const s = o.str("héllo ✓ /tmp/x");
    assertEquals(o.text(s), "héllo ✓ /tmp/x");
    assertEquals(o.send("u64()", s, "length"), 14n);
    assertEquals(o.text(null), "");
  });
});

Deno.test("Objc - NSArray keeps the objects it was given, in order", () => {
  const o = objc();
  o.withPool(() => {
    const items = ["a", "b", "c"].map((t) => o.str(t));
    const array = o.array(items);
    assertEquals(o.send("u64()", array, "count"), 3n);
    const back = o.items(array);
    assertEquals(
      back.map((p) => Deno.UnsafePointer.value(p)),
      items.map((p) => Deno.UnsafePointer.value(p)),
    );
    assertEquals(o.items(o.array([])), []);
  });
});

Deno.test("Objc - NSData round trip", () => {
  const o = objc();
  o.withPool(() => {
    const bytes = new Uint8Array([0, 1, 2, 250, 255, 0]);
    assertEquals(o.bytes(o.data(bytes)), bytes);
    assertEquals(o.bytes(o.data(new Uint8Array(0))).length, 0);
  });
});

Deno.test("Objc - file URLs and the NBD URL parse into the parts VZ reads", () => {
  const o = objc();
  o.withPool(() => {
    const file = o.fileUrl("/tmp/a b/kernel");
    assertEquals(o.text(o.send("id()", file, "path")), "/tmp/a b/kernel");
    assert(o.send("bool()", file, "isFileURL"));
    const nbd = o.url("nbd+unix:///root?socket=/tmp/shuru/nbd.sock");
    assertEquals(o.text(o.send("id()", nbd, "scheme")), "nbd+unix");
    assertEquals(o.text(o.send("id()", nbd, "path")), "/root");
    assertEquals(o.text(o.send("id()", nbd, "query")), "socket=/tmp/shuru/nbd.sock");
    assert(assertThrows(() => o.fileUrl("relative/path")) instanceof TypeError);
  });
});

Deno.test("Objc - check() turns a failed call's NSError into the framework's message", () => {
  const o = objc();
  o.withPool(() => {
    const fm = o.obj("id()", o.cls("NSFileManager"), "defaultManager");
    const missing = `/nonexistent-${crypto.randomUUID()}`;
    const err = throwsObjc(() =>
      o.check(
        "remove the test file",
        (error) => o.send("bool(id,buf)", fm, "removeItemAtPath:error:", o.str(missing), error),
      )
    );
    assertEquals(err.code, "framework_error");
    assert(err.message.startsWith("Cannot remove the test file: "), err.message);
    assert(err.domain !== undefined && err.domain.length > 0, `domain ${err.domain}`);
    assert(err.errorCode !== undefined);
    // A successful call returns its result untouched.
    const dir = Deno.makeTempDirSync();
    assertEquals(
      o.check(
        "remove",
        (e) => o.send("bool(id,buf)", fm, "removeItemAtPath:error:", o.str(dir), e),
      ),
      true,
    );
  });
});

Deno.test("Objc - errorFrom() carries domain, code and the localized description", () => {
  const o = objc();
  o.withPool(() => {
    const info = o.obj(
      "id(id,id)",
      o.cls("NSDictionary"),
      "dictionaryWithObject:forKey:",
      o.str("Invalid virtual machine configuration. The memory size must be a multiple of 1 MB."),
      staticPointer("foundation", "NSLocalizedDescriptionKey")!,
    );
    const nserror = o.obj(
      "id(id,i64,id)",
      o.cls("NSError"),
      "errorWithDomain:code:userInfo:",
      o.str("VZErrorDomain"),
      2n,
      info,
    );
    const err = o.errorFrom("start the VM", nserror);
    assertEquals(err.domain, "VZErrorDomain");
    assertEquals(err.errorCode, 2);
    assertEquals(
      err.message,
      "Cannot start the VM: Invalid virtual machine configuration. The memory size must be a " +
        "multiple of 1 MB. [VZErrorDomain 2]",
    );
    assertEquals(o.errorFrom("x", null).message, "Cannot x: it failed without an NSError");
  });
});

Deno.test("Objc - an autorelease pool releases what was autoreleased in it", () => {
  const o = objc();
  let kept: Ptr | undefined;
  o.withPool(() => {
    const s = o.obj(
      "id(buf)",
      o.cls("NSMutableString"),
      "stringWithUTF8String:",
      new Uint8Array([65, 0]),
    );
    kept = o.retain(s);
    assertEquals(o.send("u64()", s, "retainCount"), 2n);
  });
  assertEquals(o.send("u64()", kept!, "retainCount"), 1n);
  o.release(kept!);
});

Deno.test("Objc - defineClass: a run-time class whose methods run JavaScript", () => {
  const o = objc();
  const seen: string[] = [];
  let answerSelf: Deno.PointerValue = null;
  using cls = o.defineClass("ShuruTestDelegate", [
    {
      selector: "virtualMachine:didStopWithError:",
      signature: "void(id,id)",
      fn: (_self, vm, error) => {
        seen.push(`${o.text(vm)} ${o.text(error)}`);
      },
    },
    {
      selector: "answer",
      signature: "u64()",
      fn: (self) => {
        answerSelf = self;
        return 42n;
      },
    },
  ]);
  o.withPool(() => {
    const obj = o.obj("id()", o.obj("id()", cls.cls, "alloc"), "init");
    assertEquals(o.runtime.className(obj), "ShuruTestDelegate");
    assert(o.send("bool(id)", obj, "respondsToSelector:", o.sel("answer")));
    assert(!o.send("bool(id)", obj, "respondsToSelector:", o.sel("guestDidStopVirtualMachine:")));
    o.send("void(id,id)", obj, "virtualMachine:didStopWithError:", o.str("vm"), o.str("boom"));
    assertEquals(seen, ["vm boom"]);
    assertEquals(o.send("u64()", obj, "answer"), 42n);
    assertEquals(Deno.UnsafePointer.value(answerSelf), Deno.UnsafePointer.value(obj));
    o.release(obj);
  });
  // Class names are process-wide.
  const err = throwsObjc(() => o.defineClass("ShuruTestDelegate", []));
  assert(err.message.includes("name is taken"));
});

Deno.test("typeEncoding - method type strings for class_addMethod", () => {
  assertEquals(typeEncoding("void(id,id)", "apple"), "v@:@@");
  assertEquals(typeEncoding("bool(id,buf)", "apple"), "B@:@^v");
  assertEquals(typeEncoding("bool(id,buf)", "gnu"), "C@:@^v");
  assertEquals(typeEncoding("id(id,f64,bool,i64,buf)", "apple"), "@@:@dBq^v");
  assertEquals(typeEncoding("u64()", "gnu"), "Q@:");
});

Deno.test("msgSendAliases - one alias per signature row, self and _cmd first, all openable", () => {
  const aliases = msgSendAliases();
  assertEquals(Object.keys(aliases).sort(), Object.keys(SIGNATURES).sort());
  for (const [sig, def] of Object.entries(aliases)) {
    const row = SIGNATURES[sig as Signature];
    assertEquals(def.name, "objc_msgSend");
    assertEquals(def.parameters, ["pointer", "pointer", ...row.parameters]);
    assertEquals(def.result, row.result);
  }
  // Deno accepts every row as an alias of one real symbol (GNU's runtime has no objc_msgSend,
  // so alias a symbol it has; nothing is called).
  const lib = Deno.dlopen(LIBRARIES.linux.objc!.path, msgSendAliases("objc_msg_lookup"));
  assertEquals(Object.keys(lib.symbols).length, Object.keys(SIGNATURES).length);
  lib.close();
});
