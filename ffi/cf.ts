/**
 * The main thread's run loop, pumped from JavaScript.
 *
 * A `VZVirtualMachine` made with `initWithConfiguration:` (no queue) belongs to the main
 * dispatch queue: its completion handlers and delegate methods are blocks queued there, and the
 * main queue is drained by the main thread's CFRunLoop. Deno runs the main module on the
 * process's main thread but never runs that loop, so {@linkcode RunLoopPump} calls
 * `CFRunLoopRunInMode(kCFRunLoopDefaultMode, 0, false)` from a timer: each call handles what is
 * ready and returns at once, and the framework's callbacks run inside it, on the JS thread.
 *
 * How often to pump is a pure policy ({@linkcode pumpPolicy}): fast while an operation is
 * pending (start, stop, save), slow while the VM just runs; the timer keeps the process alive
 * only while something waits on the framework.
 *
 * @module
 */

import { hostOs, libraryPath, openLibrary, staticPointer } from "./platform.ts";

/** `CFRunLoopRunInMode` results. */
export const CF_RUN_LOOP_RESULT = {
  FINISHED: 1,
  STOPPED: 2,
  TIMED_OUT: 3,
  HANDLED_SOURCE: 4,
} as const;

let threadFns: { isMain(): boolean } | undefined;

/**
 * `true` on the process's main thread: `pthread_main_np() == 1` on macOS, `gettid() == getpid()`
 * on Linux. The framework's main-queue callbacks only arrive there.
 */
export function isMainThread(): boolean {
  if (!threadFns) {
    if (hostOs() === "darwin") {
      const lib = openLibrary("libc", {
        pthread_main_np: { parameters: [], result: "i32" },
      }).symbols;
      threadFns = { isMain: () => lib.pthread_main_np() === 1 };
    } else {
      const lib = openLibrary("libc", {
        gettid: { parameters: [], result: "i32" },
        getpid: { parameters: [], result: "i32" },
      }).symbols;
      threadFns = { isMain: () => lib.gettid() === lib.getpid() };
    }
  }
  return threadFns.isMain();
}

/** The main run loop of macOS's CoreFoundation. */
export interface RunLoop {
  /** One non-blocking pass over the default mode; returns a {@linkcode CF_RUN_LOOP_RESULT}. */
  runOnce(): number;
}

/** Opens CoreFoundation's run loop (macOS only). */
export function mainRunLoop(): RunLoop {
  libraryPath("coreFoundation"); // throws on other OSes, with the reason
  const lib = openLibrary("coreFoundation", {
    CFRunLoopRunInMode: { parameters: ["pointer", "f64", "u8"], result: "i32" },
  }).symbols;
  const mode = staticPointer("coreFoundation", "kCFRunLoopDefaultMode");
  return { runOnce: () => lib.CFRunLoopRunInMode(mode, 0, 0) };
}

/** What the pump does in one VM state. */
export interface PumpMode {
  /** Milliseconds between passes; 0: do not pump. */
  intervalMs: number;
  /** Keep the process alive for the pump (something waits on a framework callback). */
  ref: boolean;
}

/** Pump intervals, in milliseconds. */
export const PUMP_INTERVAL = { busy: 5, running: 50 } as const;

/**
 * The pump for a VM in `state` with `pending` operations awaiting a completion handler: fast and
 * ref'd while anything is pending or the VM is in transition, slow and unref'd while it runs
 * (the delegate's stop message still arrives within 50 ms), off once it stopped for good.
 */
export function pumpPolicy(
  state: "stopped" | "running" | "paused" | "transition",
  pending: number,
): PumpMode {
  if (pending > 0 || state === "transition") return { intervalMs: PUMP_INTERVAL.busy, ref: true };
  if (state === "running" || state === "paused") {
    return { intervalMs: PUMP_INTERVAL.running, ref: false };
  }
  return { intervalMs: 0, ref: false };
}

/** Calls `tick` on a timer whose interval and ref follow {@linkcode PumpMode}s. */
export class RunLoopPump implements Disposable {
  readonly #tick: () => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #mode: PumpMode = { intervalMs: 0, ref: false };

  /** `tick` is one pass (e.g. `mainRunLoop().runOnce`); exceptions stop nothing but are logged. */
  constructor(tick: () => void) {
    this.#tick = tick;
  }

  /** The current mode. */
  get mode(): PumpMode {
    return this.#mode;
  }

  /** Switches to `mode` (a no-op when unchanged). */
  set(mode: PumpMode): void {
    if (mode.intervalMs === this.#mode.intervalMs && mode.ref === this.#mode.ref) return;
    this.#mode = mode;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (mode.intervalMs <= 0) return;
    const timer = setInterval(() => {
      try {
        this.#tick();
      } catch (err) {
        console.error(`shuru: run loop pass failed: ${(err as Error).message}`);
      }
    }, mode.intervalMs);
    if (!mode.ref) Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Runs one pass now (after issuing a framework call, so its first callbacks come soon). */
  now(): void {
    this.#tick();
  }

  /** Stops the timer. */
  close(): void {
    this.set({ intervalMs: 0, ref: false });
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
