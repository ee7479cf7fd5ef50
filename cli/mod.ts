/**
 * The `shuru` command line: builds the commander program and runs it.
 *
 * Each subcommand lives in its own file under `cli/` and is registered here.
 *
 * @module
 */

import { Command, CommanderError } from "@commander-js/extra-typings";
import { checkpointCommand } from "./checkpoint.ts";
import { checkpointSaveCommand } from "./checkpoint_save.ts";
import { checkpointPullCommand, checkpointPushCommand } from "./checkpoint_remote.ts";
import { loginCommand } from "./login.ts";
import { cpCommand } from "./cp.ts";
import { describeError } from "./errors.ts";
import { execCommand } from "./exec.ts";
import { homeLayout, makeHomePrivate, versionText } from "../host/mod.ts";
import { initCommand } from "./init.ts";
import { mcpCommand } from "./mcp.ts";
import { nbdCommand } from "./nbd.ts";
import { pruneCommand } from "./prune.ts";
import { psCommand } from "./ps.ts";
import { shellCommand } from "./shell.ts";
import { startCommand, superviseCommand } from "./start.ts";
import { stopCommand } from "./stop.ts";
import { checkpointCreateCommand, runCommand } from "./run.ts";
import { storeCommand } from "./store.ts";
import { upgradeCommand } from "./upgrade.ts";
import { defaultBackend, parseBackend } from "../vm/mod.ts";

/** Builds the `shuru` program with every subcommand registered. */
export function buildProgram(): Command {
  const program = new Command()
    .name("shuru")
    .description(
      "Local-first microVM sandbox for AI agents: run a command in a throwaway Linux VM, " +
        "save its disk as a checkpoint, start from a checkpoint. Data home: $SHURU_HOME, " +
        "else $XDG_DATA_HOME/shuru, else ~/.local/share/shuru.",
    )
    .version(versionText(versionBackend()), "-V, --version", "print the version and VM backend")
    .showHelpAfterError("(run with --help for usage)")
    // Options after a command's first positional belong to the guest command
    // (`shuru run ls -la`), so subcommands can pass them through.
    .enablePositionalOptions()
    .configureOutput({ outputError: (str, write) => write(str) })
    // Every command reads or writes the data home: it is made private (0700) first.
    .hook("preAction", async () => {
      await makeHomePrivate(homeLayout(), { onNotice: (line) => console.error(line) });
    });
  const checkpoint = checkpointCommand().enablePositionalOptions();
  checkpoint.addCommand(
    checkpointCreateCommand().summary("run a command in a fresh sandbox, then save its disk"),
  );
  checkpoint.addCommand(
    checkpointSaveCommand().summary("save a running sandbox's disk (it keeps running)"),
  );
  checkpoint.addCommand(checkpointPushCommand().summary("push a checkpoint to an OCI registry"));
  checkpoint.addCommand(checkpointPullCommand().summary("pull a checkpoint from an OCI registry"));
  // The command list shows one line each; `shuru COMMAND --help` has the full story.
  const commands: [Command, string][] = [
    [runCommand(), "run a command (or a shell) in a throwaway VM"],
    [startCommand(), "boot a named sandbox in the background"],
    [execCommand(), "run a command in a running sandbox"],
    [shellCommand(), "open an interactive shell in a running sandbox"],
    [cpCommand(), "copy files between the host and a running sandbox"],
    [psCommand(), "list running sandboxes"],
    [stopCommand(), "stop a running sandbox (optionally saving its disk)"],
    [checkpoint, "create, save, list, inspect and delete checkpoints"],
    [storeCommand(), "maintain the block store (gc)"],
    [loginCommand(), "store registry credentials (as docker login does)"],
    [initCommand(), "build or check the guest image (kernel, initramfs, root filesystem)"],
    [pruneCommand(), "remove what crashed runs left behind"],
    [upgradeCommand(), "update this git checkout of shuru (fetch, fast-forward, rebuild)"],
    [mcpCommand(), "serve the Model Context Protocol on stdin/stdout"],
    [nbdCommand(), "serve a disk or checkpoint over NBD"],
  ];
  for (const [cmd, summary] of commands) program.addCommand(cmd.summary(summary));
  program.addCommand(superviseCommand(), { hidden: true });
  return program as unknown as Command;
}

/** The backend a run would use (`SHURU_BACKEND` when valid here, else the host's default). */
function versionBackend(): string {
  try {
    return parseBackend(Deno.env.get("SHURU_BACKEND"));
  } catch {
    return defaultBackend();
  }
}

/** Runs the CLI with `args` (without the program name) and returns the exit code. */
export async function runCli(args: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  for (const sub of program.commands) sub.exitOverride();
  try {
    await program.parseAsync(args, { from: "user" });
    // Commands that hand back a guest's exit code set Deno.exitCode.
    return Deno.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version output are "errors" to commander with exit code 0.
      return err.exitCode;
    }
    const report = describeError(err);
    if (!report) throw err;
    if (!(err instanceof Deno.errors.Interrupted)) console.error(`shuru: ${report.message}`);
    return report.exitCode;
  }
}
