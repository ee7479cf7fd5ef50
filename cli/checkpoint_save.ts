/**
 * `shuru checkpoint save CKPT [--sandbox NAME]`: save a running sandbox's disk while it keeps
 * running (quiesce, copy-on-write snapshot, thaw, then write chunks). With a command after
 * `--` it is `checkpoint create` instead (run the command in a fresh sandbox, then save).
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { nameProblem } from "../host/mod.ts";
import { UserError } from "./errors.ts";
import { createCheckpoint, withRunFlags } from "./run.ts";
import { connectSandbox } from "./sandboxes.ts";

/** Builds `shuru checkpoint save`. */
export function checkpointSaveCommand(): Command {
  const cmd = withRunFlags(
    new Command("save").description(
      "Save the disk of a running sandbox as checkpoint NAME; the sandbox keeps running (its\n" +
        "filesystem is frozen only while the copy-on-write snapshot is taken). With one sandbox\n" +
        "running, --sandbox may be omitted. With a command after --, boot a fresh sandbox, run\n" +
        "it and save (as `checkpoint create`).\n" +
        "Examples: shuru checkpoint save deps --sandbox dev\n" +
        "          shuru checkpoint save deps -- pip install requests",
    ),
  )
    .argument("<name>", "name of the new checkpoint")
    .argument("[command...]", "command for a fresh sandbox (after --); omit to save a running one")
    .option("--sandbox <name>", "the running sandbox to save (see `shuru ps`)")
    .option("--json", "print the save's figures as JSON")
    .action(async (name, argv, flags) => {
      if (argv.length > 0) {
        Deno.exitCode = await createCheckpoint(name, argv, flags);
        return;
      }
      const problem = nameProblem("checkpoint", name);
      if (problem) throw new UserError(problem);
      await using sb = await connectSandbox(flags.sandbox);
      let r: Record<string, unknown>;
      try {
        r = await sb.checkpoint(name);
      } catch (err) {
        throw new UserError(
          `Cannot save checkpoint ${name} of sandbox ${sb.name}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (flags.json) {
        console.log(JSON.stringify(r));
        return;
      }
      const mib = ((Number(r.new_bytes) || 0) / 1048576).toFixed(1);
      console.log(
        `saved checkpoint ${name}: guest paused ${r.pause_ms} ms, total ${r.total_ms} ms, ` +
          `${mib} MiB new`,
      );
    });
  return cmd as unknown as Command;
}
