/**
 * Shared by the named-sandbox commands (`start`, `ps`, `exec`, `shell`, `cp`, `stop`,
 * `checkpoint save`): finding a sandbox in the registry and connecting to it through the SDK
 * (the control protocol), and the command line that re-runs this CLI (for the supervisor).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { Sandbox } from "../sdk/mod.ts";
import { resolveSandbox, type SandboxRecord } from "../supervisor/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout } from "../host/mod.ts";

/** The command that runs this CLI again (for the detached supervisor). */
export function shuruSelfCommand(): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    "--config",
    fileURLToPath(new URL("../deno.json", import.meta.url)),
    fileURLToPath(new URL("../main.ts", import.meta.url)),
  ];
}

/** Finds sandbox `name` (or the only running one) in the registry. */
export function findSandbox(name?: string): Promise<SandboxRecord> {
  return resolveSandbox(homeLayout().sandboxes, name);
}

/** Connects to a named sandbox's control socket. */
export async function connectSandbox(name?: string): Promise<Sandbox> {
  const record = await findSandbox(name);
  try {
    return await Sandbox.connect(record.controlSocket);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new UserError(`Cannot reach sandbox ${record.name}: ${reason}`, {
      exitCode: 125,
      cause: err,
    });
  }
}
