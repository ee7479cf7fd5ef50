/**
 * Tests of the block layout against real runtimes on Linux: the LLVM blocks runtime
 * (`libblocksruntime0`: `_Block_copy`, `_Block_release`, the block classes) and GNUstep's
 * Foundation calling a block we pass through a message send.
 */

import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import {
  Block,
  BLOCK_FIELD,
  BLOCK_FLAGS,
  BLOCK_LITERAL_SIZE,
  BlockScope,
  blockSignature,
  blocksRuntime,
  DESCRIPTOR_FIELD,
  writeBlock,
} from "./block.ts";
import { gnuRuntime, Objc } from "./objc.ts";

const value = (p: Deno.PointerValue) => BigInt(Deno.UnsafePointer.value(p));
const view = (p: Deno.PointerObject) => new Deno.UnsafePointerView(p);
/** A C function pointer read from memory, callable with `definition`. */
function fnAt<const D extends Deno.ForeignFunction>(p: Deno.PointerValue, definition: D) {
  assert(p !== null, "NULL function pointer");
  return new Deno.UnsafeFnPointer(p as Deno.PointerObject<D>, definition);
}

Deno.test("writeBlock - a global block with a signature, field by field", () => {
  const mem = new DataView(new ArrayBuffer(96));
  writeBlock(mem, {
    at: { literal: 0, descriptor: 32 },
    isa: 0x1111n,
    flags: BLOCK_FLAGS.IS_GLOBAL | BLOCK_FLAGS.HAS_SIGNATURE,
    invoke: 0x2222n,
    descriptor: 0x3333n,
    signature: 0x4444n,
  });
  assertEquals(mem.getBigUint64(BLOCK_FIELD.ISA, true), 0x1111n);
  assertEquals(mem.getInt32(BLOCK_FIELD.FLAGS, true), 0x50000000);
  assertEquals(mem.getInt32(BLOCK_FIELD.RESERVED, true), 0);
  assertEquals(mem.getBigUint64(BLOCK_FIELD.INVOKE, true), 0x2222n);
  assertEquals(mem.getBigUint64(BLOCK_FIELD.DESCRIPTOR, true), 0x3333n);
  assertEquals(mem.getBigUint64(32 + DESCRIPTOR_FIELD.RESERVED, true), 0n);
  assertEquals(mem.getBigUint64(32 + DESCRIPTOR_FIELD.SIZE, true), BigInt(BLOCK_LITERAL_SIZE));
  // No helpers: the signature follows the size.
  assertEquals(mem.getBigUint64(32 + 16, true), 0x4444n);
});

Deno.test("writeBlock - with copy/dispose helpers the signature moves after them", () => {
  const mem = new DataView(new ArrayBuffer(96));
  writeBlock(mem, {
    at: { literal: 0, descriptor: 32 },
    isa: 1n,
    flags: BLOCK_FLAGS.HAS_COPY_DISPOSE | BLOCK_FLAGS.HAS_SIGNATURE,
    invoke: 2n,
    descriptor: 3n,
    copy: 0xc0n,
    dispose: 0xd0n,
    signature: 0x5en,
  });
  assertEquals(mem.getBigUint64(32 + DESCRIPTOR_FIELD.COPY, true), 0xc0n);
  assertEquals(mem.getBigUint64(32 + DESCRIPTOR_FIELD.DISPOSE, true), 0xd0n);
  assertEquals(mem.getBigUint64(32 + 32, true), 0x5en);
  assertThrows(() =>
    writeBlock(mem, {
      at: { literal: 0, descriptor: 32 },
      isa: 1n,
      flags: BLOCK_FLAGS.HAS_COPY_DISPOSE,
      invoke: 2n,
      descriptor: 3n,
    })
  );
});

Deno.test("blockSignature - clang's encoding of the block types shuru passes", () => {
  assertEquals(blockSignature("void(id)"), "v16@?0@8");
  assertEquals(blockSignature("void(id,id)"), "v24@?0@8@16");
  assertEquals(blockSignature("void(id,u64,buf)"), "v32@?0@8Q16^v24");
  assertEquals(blockSignature("void(bool)"), "v12@?0B8");
});

Deno.test("Block - a global block: _Block_copy returns it as is, its invoke reaches JS", () => {
  const rt = blocksRuntime();
  const calls: [bigint, bigint][] = [];
  using block = new Block("void(id)", (self, arg) => {
    calls.push([value(self), value(arg)]);
  });
  const flags = view(block.pointer).getInt32(BLOCK_FIELD.FLAGS);
  assertEquals(flags, BLOCK_FLAGS.IS_GLOBAL | BLOCK_FLAGS.HAS_SIGNATURE);
  assertEquals(value(view(block.pointer).getPointer(BLOCK_FIELD.ISA)), value(rt.globalIsa));
  const copy = rt.copy(block.pointer);
  assertEquals(value(copy), value(block.pointer));
  rt.release(block.pointer);
  assertEquals(view(block.pointer).getInt32(BLOCK_FIELD.FLAGS), flags);
  // Call the block the way C does: read invoke from the literal, pass the block first.
  const invoke = view(block.pointer).getPointer(BLOCK_FIELD.INVOKE);
  const fn = fnAt(invoke, {
    parameters: ["pointer", "pointer"],
    result: "void",
  });
  fn.call(block.pointer, Deno.UnsafePointer.create(0xbeefn));
  assertEquals(calls, [[value(block.pointer), 0xbeefn]]);
  // The signature string the descriptor points at.
  const descriptor = view(block.pointer).getPointer(BLOCK_FIELD.DESCRIPTOR)!;
  const signature = view(descriptor).getPointer(16)!;
  assertEquals(Deno.UnsafePointerView.getCString(signature), "v16@?0@8");
});

Deno.test("Block - a stack block: the runtime copies by descriptor size, calls copy and dispose", () => {
  const rt = blocksRuntime();
  const copies: [bigint, bigint][] = [];
  const disposed: bigint[] = [];
  const results: bigint[] = [];
  using block = new Block("u64()", (self) => {
    results.push(value(self));
    return 7n;
  }, {
    kind: "stack",
    onCopy: (dst, src) => copies.push([value(dst), value(src)]),
    onDispose: (b) => disposed.push(value(b)),
  });
  const heap = rt.copy(block.pointer)!;
  assert(value(heap) !== value(block.pointer), "a stack block is copied to the heap");
  assertEquals(copies, [[value(heap), value(block.pointer)]]);
  const flags = view(heap).getInt32(BLOCK_FIELD.FLAGS);
  assert((flags & BLOCK_FLAGS.NEEDS_FREE) !== 0);
  // A nonzero reference count in the low 16 bits (LLVM's runtime counts by 1, Apple's by 2).
  assert((flags & 0xffff) !== 0);
  assertEquals(flags & ~0xffff & ~BLOCK_FLAGS.NEEDS_FREE, view(block.pointer).getInt32(8));
  // The copy holds the same invoke pointer (the 32 bytes the descriptor's size announced).
  assertEquals(
    value(view(heap).getPointer(BLOCK_FIELD.INVOKE)),
    value(view(block.pointer).getPointer(BLOCK_FIELD.INVOKE)),
  );
  const fn = fnAt(view(heap).getPointer(BLOCK_FIELD.INVOKE), {
    parameters: ["pointer"],
    result: "u64",
  });
  assertEquals(fn.call(heap), 7n);
  assertEquals(results, [value(heap)]);
  // A second copy of a heap block only counts a reference.
  assertEquals(value(rt.copy(heap)), value(heap));
  rt.release(heap);
  assertEquals(disposed, []);
  rt.release(heap);
  assertEquals(disposed, [value(heap)]);
});

Deno.test("Block - GNUstep's Foundation calls our block through a message send", () => {
  const o = Objc.open({ runtime: gnuRuntime() });
  const seen: [string, bigint][] = [];
  using block = new Block("void(id,u64,buf)", (_self, item, index, stop) => {
    seen.push([o.text(item), index]);
    // *stop = YES after the second element.
    if (index === 1n) new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(stop!, 1))[0] = 1;
  });
  o.withPool(() => {
    const array = o.array(["kernel", "initrd", "disk"].map((s) => o.str(s)));
    o.send("void(id)", array, "enumerateObjectsUsingBlock:", block.pointer);
  });
  assertEquals(seen, [["kernel", 0n], ["initrd", 1n]]);
});

Deno.test("BlockScope - a completion handler runs once and lives until the scope closes", () => {
  const scope = new BlockScope();
  const errors: bigint[] = [];
  const handler = scope.completion((error) => errors.push(value(error)));
  const invoke = fnAt(view(handler).getPointer(BLOCK_FIELD.INVOKE), {
    parameters: ["pointer", "pointer"],
    result: "void",
  });
  invoke.call(handler, null);
  invoke.call(handler, Deno.UnsafePointer.create(5n));
  assertEquals(errors, [0n]);
  assertEquals(scope.size, 1);
  scope.close();
  assertEquals(scope.size, 0);
});
