/**
 * Defaults every user command of a sandbox gets unless it says otherwise (an OCI image's Env,
 * WorkingDir, and a command prefix that switches to its User; `runner/` makes them from the
 * image), applied the same way by `shuru run` and by the control server of named sandboxes.
 *
 * @module
 */

/** Plain data applied to every user command ({@linkcode applySpawnDefaults}). */
export interface SpawnDefaults {
  /** Variables under the request's own. */
  env: Record<string, string>;
  /** The working folder when the request names none. */
  cwd?: string;
  /** Put in front of argv (switches to the image's user). */
  argvPrefix: string[];
}

/** A user command with `defaults` applied: the request's own env and cwd win. */
export function applySpawnDefaults(
  defaults: SpawnDefaults,
  argv: readonly string[],
  options: { env?: Record<string, string>; cwd?: string },
): { argv: string[]; env: Record<string, string>; cwd?: string } {
  const cwd = options.cwd ?? defaults.cwd;
  return {
    argv: [...defaults.argvPrefix, ...argv],
    env: { ...defaults.env, ...(options.env ?? {}) },
    ...(cwd !== undefined ? { cwd } : {}),
  };
}
