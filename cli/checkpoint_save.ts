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
import { createCheckpoint, MEMORY_FLAG_HELP, withRunFlags } from "./run.ts";
import { parseSizeMiB } from "../spec/mod.ts";
import { connectSandbox } from "./sandboxes.ts";

/** Builds `shuru checkpoint save`. */
export function checkpointSaveCommand(): Command {
  const cmd = withRunFlags(
    new Command("save").description(
      "Save the disk of a running sandbox as checkpoint NAME; the sandbox keeps running (its\n" +
        "filesystem is frozen only while the copy-on-write snapshot is taken). With one sandbox\n" +
        "running, --sandbox may be omitted. With a command after --, boot a fresh sandbox, run\n" +
        "it and save (as `checkpoint create`).\n" +
        "With --memory, its memory and device state too: `shuru run|start --from NAME` resumes\n" +
        "every process as it was, and `start --from NAME --count N` forks it.\n" +
        "Examples: shuru checkpoint save deps --sandbox dev\n" +
        "          shuru checkpoint save live --memory --sandbox dev\n" +
        "          shuru checkpoint save deps -- pip install requests",
    ),
    { memoryFlag: false },
  )
    .argument("<name>", "name of the new checkpoint")
    .argument("[command...]", "command for a fresh sandbox (after --); omit to save a running one")
    .option("--sandbox <name>", "the running sandbox to save (see `shuru ps`)")
    .option(
      "--memory [MiB]",
      "save the running sandbox's memory and device state too: `shuru run|start --from NAME` " +
        "then resumes every process as it was (it pauses for the copy; not with mounted " +
        `folders). With a command after --, a value is the fresh sandbox's ${MEMORY_FLAG_HELP}`,
    )
    .option("--json", "print the save's figures as JSON")
    .action(async (name, argv, flags) => {
      const { memory, ...rest } = flags;
      if (argv.length > 0) {
        if (memory === true) {
          throw new UserError(
            `Cannot save checkpoint ${name} with --memory and a command: start a sandbox ` +
              "(`shuru start`), run it there, then `shuru checkpoint save NAME --memory`",
          );
        }
        Deno.exitCode = await createCheckpoint(name, argv, {
          ...rest,
          ...(memory !== undefined ? { memory: parseSizeMiB("--memory", memory) } : {}),
        });
        return;
      }
      if (typeof memory === "string") {
        throw new UserError(
          `Cannot use --memory ${memory} when saving a running sandbox: --memory takes no ` +
            "value there (it saves the memory)",
        );
      }
      const problem = nameProblem("checkpoint", name);
      if (problem) throw new UserError(problem);
      await using sb = await connectSandbox(flags.sandbox);
      let r: Record<string, unknown>;
      try {
        r = await sb.checkpoint(name, { memory: memory === true });
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
      const mem = r.memory as { new_chunks?: number } | undefined;
      const memMib = mem ? (((mem.new_chunks ?? 0) * 65536) / 1048576).toFixed(1) : undefined;
      console.log(
        `saved checkpoint ${name}${mem ? " with memory" : ""}: ` +
          `${mem ? "sandbox paused" : "guest filesystem frozen"} ${r.pause_ms} ms, ` +
          `total ${r.total_ms} ms, ${mib} MiB new disk` +
          (memMib !== undefined ? `, ${memMib} MiB new memory` : ""),
      );
    });
  return cmd as unknown as Command;
}
