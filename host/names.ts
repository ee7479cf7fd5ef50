/**
 * The one rule for names of things in the data home: checkpoints (file names in the store) and
 * named sandboxes (their instance folders and registry records). A letter or digit, then
 * letters, digits, `.`, `_` and `-`, never `..`; at most {@linkcode NAME_LIMITS} characters. A
 * sandbox's limit is shorter because its name is part of socket paths (107 bytes at most).
 * Every edge (CLI, control server, SDK, store, supervisor) checks with {@linkcode nameProblem}.
 *
 * @module
 */

/** The longest name of each kind. */
export const NAME_LIMITS = { checkpoint: 128, sandbox: 48 } as const;

/** What a name names. */
export type NameKind = keyof typeof NAME_LIMITS;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Returns why `name` cannot name a `kind` (one line for the user), or undefined when it can.
 *
 * @example
 * ```ts
 * import { nameProblem } from "./names.ts";
 * if (nameProblem("checkpoint", "deps-1.2") !== undefined) throw new Error("valid");
 * if (nameProblem("sandbox", "../x") === undefined) throw new Error("a path");
 * ```
 */
export function nameProblem(kind: NameKind, name: string): string | undefined {
  const max = NAME_LIMITS[kind];
  if (name.length <= max && NAME_RE.test(name) && !name.includes("..")) return undefined;
  return `Cannot use ${kind} name "${name}": use 1-${max} letters, digits, ".", "_" or "-", ` +
    "starting with a letter or digit";
}
