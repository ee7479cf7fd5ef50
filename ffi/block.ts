/**
 * Blocks (closures) for Objective-C APIs that take a completion handler, laid out in memory by
 * hand as clang's Block ABI specifies (clang.llvm.org/docs/Block-ABI-Apple.html), with the invoke
 * function an `UnsafeCallback` into JavaScript.
 *
 * A block literal on a 64-bit target:
 * ```text
 *  0  void *isa            &_NSConcreteGlobalBlock (or &_NSConcreteStackBlock)
 *  8  int   flags          BLOCK_IS_GLOBAL | BLOCK_HAS_SIGNATURE (| BLOCK_HAS_COPY_DISPOSE)
 * 12  int   reserved       0
 * 16  void *invoke         called as invoke(block, args...)
 * 24  struct descriptor *  → { unsigned long reserved; unsigned long size;
 *                              [void *copy; void *dispose;  only with BLOCK_HAS_COPY_DISPOSE]
 *                              const char *signature;       only with BLOCK_HAS_SIGNATURE }
 * ```
 *
 * shuru's blocks are **global** blocks: `_Block_copy` returns the same pointer and
 * `_Block_release` does nothing, so the framework never frees our memory; we keep it (and the
 * callback) alive until the owner's {@linkcode BlockScope} closes. A **stack** kind (with copy and
 * dispose helpers) exists so the tests can check the descriptor layout through the blocks
 * runtime's own copy and release, and to learn when a framework lets go of a block.
 *
 * Memory handed to native code lives in `new ArrayBuffer(n)` (never moved by the garbage
 * collector).
 *
 * @module
 */

import {
  type CallbackArgsOf,
  type Ptr,
  type ResultOf,
  type Signature,
  SIGNATURES,
} from "./objc.ts";
import { openLibrary } from "./platform.ts";

/** Flag bits of a block literal (Block-ABI-Apple, "Block_private.h"). */
export const BLOCK_FLAGS = {
  /** Set by `_Block_copy` on a heap copy. */
  NEEDS_FREE: 1 << 24,
  /** The descriptor has copy and dispose helpers. */
  HAS_COPY_DISPOSE: 1 << 25,
  /** A global block: never copied, never freed. */
  IS_GLOBAL: 1 << 28,
  /** Struct return through a hidden pointer (never ours). */
  HAS_STRET: 1 << 29,
  /** The descriptor has an ObjC type signature. */
  HAS_SIGNATURE: 1 << 30,
} as const;

/** Field offsets of a block literal (64-bit). */
export const BLOCK_FIELD = { ISA: 0, FLAGS: 8, RESERVED: 12, INVOKE: 16, DESCRIPTOR: 24 } as const;
/** Size of a block literal with no captured variables. */
export const BLOCK_LITERAL_SIZE = 32;
/** Field offsets of a block descriptor (64-bit); `signature` follows the helpers when present. */
export const DESCRIPTOR_FIELD = { RESERVED: 0, SIZE: 8, COPY: 16, DISPOSE: 24 } as const;

/** Where a block's parts sit in one buffer: literal, descriptor, then the signature string. */
const LITERAL_AT = 0;
const DESCRIPTOR_AT = 32;
const SIGNATURE_AT = 72;

/** The values of one block literal and its descriptor (addresses as numbers). */
export interface BlockLayout {
  /** Address of the block's class (`_NSConcreteGlobalBlock`/`_NSConcreteStackBlock`). */
  isa: bigint;
  /** {@linkcode BLOCK_FLAGS} bits. */
  flags: number;
  /** The invoke function. */
  invoke: bigint;
  /** Address the descriptor will have. */
  descriptor: bigint;
  /** Copy helper, when `flags` has HAS_COPY_DISPOSE. */
  copy?: bigint;
  /** Dispose helper, when `flags` has HAS_COPY_DISPOSE. */
  dispose?: bigint;
  /** Address of the signature C string, when `flags` has HAS_SIGNATURE. */
  signature?: bigint;
}

/**
 * Writes a block literal at `layout.at.literal` and its descriptor at `layout.at.descriptor` of
 * `view` (little endian, 64-bit): a pure function, so the layout is testable byte by byte.
 */
export function writeBlock(
  view: DataView,
  layout: BlockLayout & { at: { literal: number; descriptor: number } },
): void {
  const at = layout.at;
  const helpers = (layout.flags & BLOCK_FLAGS.HAS_COPY_DISPOSE) !== 0;
  const signed = (layout.flags & BLOCK_FLAGS.HAS_SIGNATURE) !== 0;
  if (helpers && (layout.copy === undefined || layout.dispose === undefined)) {
    throw new TypeError("A block with HAS_COPY_DISPOSE needs copy and dispose helpers");
  }
  if (signed && layout.signature === undefined) {
    throw new TypeError("A block with HAS_SIGNATURE needs a signature");
  }
  const l = at.literal;
  view.setBigUint64(l + BLOCK_FIELD.ISA, layout.isa, true);
  view.setInt32(l + BLOCK_FIELD.FLAGS, layout.flags, true);
  view.setInt32(l + BLOCK_FIELD.RESERVED, 0, true);
  view.setBigUint64(l + BLOCK_FIELD.INVOKE, layout.invoke, true);
  view.setBigUint64(l + BLOCK_FIELD.DESCRIPTOR, layout.descriptor, true);
  const d = at.descriptor;
  view.setBigUint64(d + DESCRIPTOR_FIELD.RESERVED, 0n, true);
  view.setBigUint64(d + DESCRIPTOR_FIELD.SIZE, BigInt(BLOCK_LITERAL_SIZE), true);
  let next = d + DESCRIPTOR_FIELD.COPY;
  if (helpers) {
    view.setBigUint64(d + DESCRIPTOR_FIELD.COPY, layout.copy!, true);
    view.setBigUint64(d + DESCRIPTOR_FIELD.DISPOSE, layout.dispose!, true);
    next = d + DESCRIPTOR_FIELD.DISPOSE + 8;
  }
  if (signed) view.setBigUint64(next, layout.signature!, true);
}

/**
 * The ObjC type signature of a block with parameters and result of `sig`, as clang writes it:
 * `v16@?0@8` is `void (^)(id)`: result, frame size, the block itself at 0, each argument at its
 * offset (pointers and 64-bit integers take 8 bytes; bool and int are promoted to 4).
 */
export function blockSignature(sig: Signature): string {
  const row = SIGNATURES[sig];
  const code = (t: string): [string, number] => {
    switch (t) {
      case "void":
        return ["v", 0];
      case "pointer":
        return ["@", 8];
      case "buffer":
        return ["^v", 8];
      case "bool":
        return ["B", 4];
      case "i32":
        return ["i", 4];
      case "u64":
        return ["Q", 8];
      case "i64":
        return ["q", 8];
      case "f64":
        return ["d", 8];
      default:
        throw new TypeError(`No block type encoding for ${t}`);
    }
  };
  let offset = 8;
  let args = "";
  for (const p of row.parameters) {
    const [c, size] = code(p);
    args += `${c}${offset}`;
    offset += size;
  }
  return `${code(row.result)[0]}${offset}@?0${args}`;
}

/** The blocks runtime: block classes and `_Block_copy`/`_Block_release`. */
export interface BlocksRuntime {
  /** `&_NSConcreteGlobalBlock`. */
  readonly globalIsa: Ptr;
  /** `&_NSConcreteStackBlock`. */
  readonly stackIsa: Ptr;
  /** `_Block_copy`. */
  copy(block: Ptr): Deno.PointerValue;
  /** `_Block_release`. */
  release(block: Ptr): void;
}

let runtime: BlocksRuntime | undefined;

/** Opens the host's blocks runtime (libSystem on macOS, libBlocksRuntime on Linux) once. */
export function blocksRuntime(): BlocksRuntime {
  if (runtime) return runtime;
  const lib = openLibrary("blocks", {
    _NSConcreteGlobalBlock: { type: "pointer" },
    _NSConcreteStackBlock: { type: "pointer" },
    _Block_copy: { parameters: ["pointer"], result: "pointer" },
    _Block_release: { parameters: ["pointer"], result: "void" },
  }).symbols;
  const globalIsa = lib._NSConcreteGlobalBlock;
  const stackIsa = lib._NSConcreteStackBlock;
  if (globalIsa === null || stackIsa === null) {
    throw new TypeError("Cannot find the block classes in the blocks runtime");
  }
  runtime = {
    globalIsa,
    stackIsa,
    copy: (block) => lib._Block_copy(block),
    release: (block) => lib._Block_release(block),
  };
  return runtime;
}

/** Options of {@linkcode Block}. */
export interface BlockOptions {
  /** `global` (default) or `stack` (copy and dispose helpers call the hooks below). */
  kind?: "global" | "stack";
  /** Stack kind: called when the runtime copies the block to the heap (dst, src). */
  onCopy?: (dst: Deno.PointerValue, src: Deno.PointerValue) => void;
  /** Stack kind: called when the runtime frees a heap copy. */
  onDispose?: (block: Deno.PointerValue) => void;
  /** Blocks runtime (default: the host's). */
  runtime?: BlocksRuntime;
}

function address(p: Deno.PointerValue): bigint {
  return BigInt(Deno.UnsafePointer.value(p));
}

/**
 * A block whose body is a JavaScript function. Pass {@linkcode Block.pointer} where a method
 * takes a block; keep the object until the block can no longer be called, then close it.
 */
export class Block<S extends Signature = Signature> implements Disposable {
  /** The block literal (what an ObjC method receives). */
  readonly pointer: Ptr;
  /** The invoke function. */
  readonly invoke: Deno.UnsafeCallback;
  readonly #memory: ArrayBuffer;
  readonly #helpers: { close(): void }[] = [];
  #closed = false;

  constructor(
    sig: S,
    fn: (block: Deno.PointerValue, ...args: CallbackArgsOf<S>) => ResultOf<S>,
    options: BlockOptions = {},
  ) {
    const rt = options.runtime ?? blocksRuntime();
    const row = SIGNATURES[sig];
    const definition: Deno.UnsafeCallbackDefinition = {
      parameters: ["pointer", ...row.parameters],
      result: row.result,
    };
    this.invoke = new Deno.UnsafeCallback(
      definition,
      fn as unknown as Deno.UnsafeCallbackFunction,
    );
    const signature = new TextEncoder().encode(blockSignature(sig));
    this.#memory = new ArrayBuffer(SIGNATURE_AT + signature.length + 1);
    const bytes = new Uint8Array(this.#memory);
    bytes.set(signature, SIGNATURE_AT);
    const base = address(Deno.UnsafePointer.of(bytes));
    let flags: number = BLOCK_FLAGS.HAS_SIGNATURE;
    let isa = rt.globalIsa;
    let copy: bigint | undefined;
    let dispose: bigint | undefined;
    if ((options.kind ?? "global") === "global") {
      flags |= BLOCK_FLAGS.IS_GLOBAL;
    } else {
      isa = rt.stackIsa;
      flags |= BLOCK_FLAGS.HAS_COPY_DISPOSE;
      const copyHelper = new Deno.UnsafeCallback(
        { parameters: ["pointer", "pointer"], result: "void" },
        (dst, src) => options.onCopy?.(dst, src),
      );
      const disposeHelper = new Deno.UnsafeCallback(
        { parameters: ["pointer"], result: "void" },
        (block) => options.onDispose?.(block),
      );
      this.#helpers.push(copyHelper, disposeHelper);
      copy = address(copyHelper.pointer);
      dispose = address(disposeHelper.pointer);
    }
    writeBlock(new DataView(this.#memory), {
      at: { literal: LITERAL_AT, descriptor: DESCRIPTOR_AT },
      isa: address(isa),
      flags,
      invoke: address(this.invoke.pointer),
      descriptor: base + BigInt(DESCRIPTOR_AT),
      signature: base + BigInt(SIGNATURE_AT),
      ...(copy !== undefined ? { copy, dispose } : {}),
    });
    this.pointer = Deno.UnsafePointer.create(base + BigInt(LITERAL_AT))!;
  }

  /** Closes the callbacks. Only once nothing can call the block any more. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.invoke.close();
    for (const h of this.#helpers) h.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The blocks of one owner (a VM): each stays alive until the scope closes, whether or not it
 * was called, because the framework may still hold it. Leaking a few hundred bytes per
 * operation is the safe side of this trade.
 */
export class BlockScope implements Disposable {
  readonly #blocks: Block[] = [];
  readonly #runtime: BlocksRuntime | undefined;

  constructor(runtime?: BlocksRuntime) {
    this.#runtime = runtime;
  }

  /** A block of signature `sig` running `fn`, owned by this scope. */
  block<S extends Signature>(
    sig: S,
    fn: (block: Deno.PointerValue, ...args: CallbackArgsOf<S>) => ResultOf<S>,
  ): Ptr {
    const block = new Block(sig, fn, this.#runtime ? { runtime: this.#runtime } : {});
    this.#blocks.push(block as unknown as Block);
    return block.pointer;
  }

  /**
   * A `void (^)(NSError *)` completion handler: `done` gets the error (null on success) on the
   * first call; later calls are ignored.
   */
  completion(done: (error: Deno.PointerValue) => void): Ptr {
    let called = false;
    return this.block("void(id)", (_block, error) => {
      if (called) return;
      called = true;
      done(error);
    });
  }

  /** How many blocks the scope holds. */
  get size(): number {
    return this.#blocks.length;
  }

  /** Closes every block. */
  close(): void {
    for (const b of this.#blocks.splice(0)) b.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
