/**
 * Small assertion helpers for tests (JSR's @std/assert is unreachable here; node:assert covers
 * the rest).
 *
 * @module
 */

import { deepStrictEqual, rejects, strictEqual, throws } from "node:assert";

/** Asserts deep equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** Asserts `===`. */
export function assertStrictEquals<T>(actual: T, expected: T, msg?: string): void {
  strictEqual(actual, expected, msg);
}

/** Asserts a value is truthy. */
export function assert(value: unknown, msg?: string): asserts value {
  if (!value) throw new Error(msg ?? "assertion failed");
}

/** Asserts `fn` throws; returns the error. */
export function assertThrows(fn: () => unknown, msgIncludes?: string): Error {
  let caught: unknown;
  throws(() => {
    try {
      fn();
    } catch (e) {
      caught = e;
      throw e;
    }
  });
  const err = caught as Error;
  if (msgIncludes && !String(err?.message).includes(msgIncludes)) {
    throw new Error(`expected error including "${msgIncludes}", got "${err?.message}"`);
  }
  return err;
}

/** Asserts the promise rejects; returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  msgIncludes?: string,
): Promise<Error> {
  let caught: unknown;
  await rejects(async () => {
    try {
      await fn();
    } catch (e) {
      caught = e;
      throw e;
    }
  });
  const err = caught as Error;
  if (msgIncludes && !String(err?.message).includes(msgIncludes)) {
    throw new Error(`expected error including "${msgIncludes}", got "${err?.message}"`);
  }
  return err;
}
