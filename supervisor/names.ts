/**
 * Sandbox names: user-given ones are validated, missing ones generated as adjective-noun.
 *
 * @module
 */

import { nameProblem } from "../host/mod.ts";

const ADJECTIVES = [
  "amber",
  "brave",
  "calm",
  "clever",
  "crisp",
  "dapper",
  "eager",
  "fancy",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "lively",
  "lucky",
  "mellow",
  "nimble",
  "plucky",
  "quiet",
  "rapid",
  "shiny",
  "snappy",
  "sunny",
  "swift",
  "tidy",
  "vivid",
  "witty",
  "zesty",
  "bold",
  "cosmic",
  "frosty",
] as const;
const NOUNS = [
  "otter",
  "falcon",
  "maple",
  "comet",
  "badger",
  "heron",
  "lynx",
  "pebble",
  "quokka",
  "raven",
  "walrus",
  "cedar",
  "dolphin",
  "ember",
  "fjord",
  "gecko",
  "harbor",
  "ibis",
  "jackal",
  "koala",
  "lemur",
  "meadow",
  "newt",
  "orca",
  "panda",
  "puffin",
  "robin",
  "salmon",
  "tapir",
  "yak",
] as const;

/** Returns an error message when `name` cannot name a sandbox, else undefined. */
export function checkSandboxName(name: string): string | undefined {
  return nameProblem("sandbox", name);
}

function pick<T>(list: readonly T[]): T {
  const i = crypto.getRandomValues(new Uint32Array(1))[0]! % list.length;
  return list[i]!;
}

/** Generates an adjective-noun name not in `taken` (a number is appended if needed). */
export function generateSandboxName(taken: ReadonlySet<string>): string {
  for (let i = 0; i < 50; i++) {
    const name = `${pick(ADJECTIVES)}-${pick(NOUNS)}`;
    if (!taken.has(name)) return name;
  }
  for (let n = 2;; n++) {
    const name = `${pick(ADJECTIVES)}-${pick(NOUNS)}-${n}`;
    if (!taken.has(name)) return name;
  }
}
