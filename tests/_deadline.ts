/**
 * Deadlines for tests, so a hung test fails with its name instead of stalling the run.
 *
 * - {@linkcode withDeadline}: one wait (a child's line, a process's exit) with its own deadline.
 * - {@linkcode installTestDeadline}: wraps `Deno.test` so every test registered afterwards fails
 *   once it runs past its deadline, naming itself and where it was declared. `run-tests` and the
 *   `test` task load it before every test module (`deno test --preload tests/_preload.ts`).
 *   The default deadline is {@linkcode UNIT_TEST_DEADLINE_S} for unit tests beside the modules
 *   and {@linkcode GUEST_TEST_DEADLINE_S} for the tests in `tests/` (real guests under TCG on a
 *   busy machine); a test that does much more than most says so with {@linkcode testDeadline};
 *   `SHURU_TEST_DEADLINE=SECONDS` sets one deadline for all.
 *
 * A test that passed its deadline keeps whatever it was waiting on; it has failed, and the run
 * goes on. Only code that blocks the event loop itself escapes this (no timer can fire): the
 * suite watchdog in `run-tests` ends such a run.
 *
 * @module
 */

/** Default deadline of a unit test (a file outside `tests/`), in seconds. */
export const UNIT_TEST_DEADLINE_S = 120;
/** Default deadline of an end-to-end test (a file in `tests/`), in seconds. */
export const GUEST_TEST_DEADLINE_S = 600;

/** A test or a wait ran past its deadline. */
export class DeadlineError extends Error {
  /** Machine-readable reason. */
  readonly code = "deadline";
  constructor(message: string) {
    super(message);
    this.name = "DeadlineError";
  }
}

/**
 * Resolves as `promise` does, or rejects with a {@linkcode DeadlineError} naming `what` once
 * `ms` milliseconds have passed first. The timer is cleared either way.
 */
export async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DeadlineError(`Timed out after ${ms / 1000} s waiting for ${what}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

type TestFn = (t: Deno.TestContext) => void | Promise<void>;
type TestRegister = (...args: unknown[]) => void;

/** Deadlines set by {@linkcode testDeadline}, by test name. */
const ownDeadlines = new Map<string, number>();

/**
 * Gives the test named `name` (declared after this call) a deadline of `seconds` instead of the
 * default, for a test that does much more than most (many guest runs one after another).
 */
export function testDeadline(seconds: number, name: string): void {
  ownDeadlines.set(name, seconds);
}

/** The definition behind any of `Deno.test`'s call forms. */
function definitionOf(args: unknown[]): Deno.TestDefinition {
  const [a, b, c] = args as [unknown, unknown, unknown];
  if (typeof a === "function") return { name: a.name, fn: a as TestFn };
  if (typeof a === "string") {
    if (typeof b === "function") return { name: a, fn: b as TestFn };
    return { ...(b as object), name: a, fn: c as TestFn };
  }
  const options = a as Deno.TestDefinition;
  if (typeof b === "function") return { ...options, name: options.name ?? b.name, fn: b as TestFn };
  return options;
}

/** `file:line` of the test file's `Deno.test` call, from a stack captured inside the wrapper. */
function callerOf(stack: string | undefined): string {
  const lines = (stack ?? "").split("\n").slice(1);
  const here = new URL(import.meta.url).pathname;
  for (const line of lines) {
    const m = /(file:\/\/[^\s)]+):(\d+):\d+/.exec(line);
    if (m && new URL(m[1]!).pathname !== here) {
      return `${new URL(m[1]!).pathname}:${m[2]}`;
    }
  }
  return "an unknown file";
}

const E2E_DIR = new URL(".", import.meta.url).pathname;

/** The deadline for the test `name` declared at `where` (seconds). */
function deadlineFor(name: string, where: string): number {
  const forced = Number(Deno.env.get("SHURU_TEST_DEADLINE"));
  if (Number.isFinite(forced) && forced > 0) return forced;
  const own = ownDeadlines.get(name);
  if (own !== undefined) return own;
  return where.startsWith(E2E_DIR) ? GUEST_TEST_DEADLINE_S : UNIT_TEST_DEADLINE_S;
}

function wrapRegister(register: TestRegister): TestRegister {
  return (...args: unknown[]) => {
    const def = definitionOf(args);
    const where = callerOf(new Error().stack);
    const fn = def.fn;
    const seconds = deadlineFor(def.name, where);
    register({
      ...def,
      fn: (t: Deno.TestContext) =>
        withDeadline(
          Promise.resolve().then(() => fn(t)),
          seconds * 1000,
          `the test to finish`,
        ).catch((err) => {
          if (!(err instanceof DeadlineError)) throw err;
          throw new DeadlineError(
            `Test "${def.name}" (${where}) did not finish within its ${seconds} s deadline: ` +
              "it hangs on something (set SHURU_TEST_DEADLINE=SECONDS to change the deadline)",
          );
        }),
    });
  };
}

let installed = false;

/** Makes every `Deno.test` (and `.only`, `.ignore`) registered from now on carry a deadline. */
export function installTestDeadline(): void {
  if (installed) return;
  installed = true;
  const original = Deno.test;
  const test = wrapRegister(original as TestRegister) as typeof Deno.test;
  test.only = wrapRegister(original.only as TestRegister) as typeof Deno.test.only;
  test.ignore = wrapRegister(original.ignore as TestRegister) as typeof Deno.test.ignore;
  Object.defineProperty(Deno, "test", { value: test, configurable: true, writable: true });
}
