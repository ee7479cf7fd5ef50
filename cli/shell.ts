/**
 * `shuru shell NAME`: an interactive shell on a PTY in a named sandbox.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { attachProcess } from "./attach.ts";
import { UserError } from "./errors.ts";
import { connectSandbox } from "./sandboxes.ts";

/** Builds `shuru shell`. */
export function shellCommand(): Command {
  return new Command("shell")
    .description(
      "Open an interactive shell (bash on a pseudo-terminal) in a running sandbox.\n" +
        "Example: shuru shell dev",
    )
    .argument("[name]", "sandbox name (may be omitted when only one runs)")
    .option("--cwd <dir>", "working directory in the guest (absolute)")
    .action(async (name, opts) => {
      if (opts.cwd !== undefined && !opts.cwd.startsWith("/")) {
        throw new UserError(`Cannot use --cwd "${opts.cwd}": must be an absolute guest path`);
      }
      const sb = await connectSandbox(name);
      let code: number;
      try {
        code = (await attachProcess(sb, ["/bin/bash", "-l"], {
          tty: true,
          env: {},
          ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
          stdin: true,
        })).exitCode;
      } finally {
        await sb.close().catch(() => {});
      }
      Deno.exit(code);
    }) as unknown as Command;
}
