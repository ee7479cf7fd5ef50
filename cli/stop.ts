/**
 * `shuru stop NAME [--save CKPT]`: stop a named sandbox through its control socket (after a live
 * checkpoint when asked), wait for its supervisor to exit, and fall back to signals when the
 * sandbox does not answer.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { processAlive } from "../host/mod.ts";
import { UserError } from "./errors.ts";
import { connectSandbox, findSandbox } from "./sandboxes.ts";

async function waitGone(pid: { pid: number; startTime: number }, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await processAlive(pid))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !(await processAlive(pid));
}

/** Builds `shuru stop`. */
export function stopCommand(): Command {
  return new Command("stop")
    .description(
      "Stop a running sandbox: its guest powers off, its VM and disk go away. With --save,\n" +
        "its disk is first saved as a checkpoint (live, like `shuru checkpoint save`).\n" +
        "Example: shuru stop dev --save dev-final",
    )
    .argument("<name>", "sandbox name (see `shuru ps`)")
    .option("--save <checkpoint>", "save the disk as this checkpoint before stopping")
    .option("--timeout <seconds>", "seconds to wait before killing it", "60")
    .action(async (name, opts) => {
      const record = await findSandbox(name);
      const waitMs = Number(opts.timeout) * 1000;
      if (!(waitMs > 0)) throw new UserError(`Invalid --timeout "${opts.timeout}"`);
      if (opts.save !== undefined) {
        await using sb = await connectSandbox(name);
        try {
          const r = await sb.checkpoint(opts.save);
          console.error(
            `shuru: saved checkpoint ${opts.save} (guest paused ${r.pause_ms} ms, ` +
              `${((Number(r.new_bytes) || 0) / 1048576).toFixed(1)} MiB new)`,
          );
        } catch (err) {
          throw new UserError(
            `Cannot save checkpoint ${opts.save} of ${name}: ${(err as Error).message}; ` +
              "the sandbox keeps running",
            { cause: err },
          );
        }
      }
      let asked = false;
      try {
        await using sb = await connectSandbox(name);
        await sb.stop();
        asked = true;
      } catch {
        // No answer on the control socket: fall back to SIGTERM.
      }
      if (!asked) {
        try {
          Deno.kill(record.supervisor.pid, "SIGTERM");
        } catch { /* already gone */ }
      }
      if (!(await waitGone(record.supervisor, waitMs))) {
        try {
          Deno.kill(record.supervisor.pid, "SIGKILL");
        } catch { /* gone */ }
        await waitGone(record.supervisor, 5000);
        console.error(`shuru: ${name} did not stop in time; killed its supervisor`);
      }
      console.log(name);
    }) as unknown as Command;
}
