/**
 * `shuru exec`: run one command in a named sandbox (through its control socket) or in a bare
 * guest agent (`--connect unix:PATH`); stdout/stderr go to ours and its exit code becomes ours.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { UserError } from "./errors.ts";
import { guestArgv } from "./run.ts";
import { AgentConnection, ConnectionError } from "../agent/mod.ts";
import { parseDuration } from "../spec/mod.ts";
import {
  attachAgentProcess,
  type AttachOptions,
  attachProcess,
  type AttachResult,
} from "./attach.ts";
import { connectSandbox } from "./sandboxes.ts";

/** Parses `--connect` (only `unix:PATH` for now). */
export function parseConnectTarget(value: string): { unix: string } {
  if (value.startsWith("unix:") && value.length > 5) return { unix: value.slice(5) };
  throw new UserError(`Cannot connect to "${value}": expected unix:PATH`);
}

function parseEnv(
  value: string,
  previous: Record<string, string> | undefined,
): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new UserError(`Cannot use -e "${value}": expected KEY=VALUE`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** Builds the `exec` subcommand. */
export function execCommand(): Command {
  const cmd = new Command("exec")
    .description(
      "Run a command in a running sandbox (see `shuru start`, `shuru ps`). Its stdout and " +
        "stderr are streamed to ours and its exit code becomes shuru's (128+N if killed by " +
        "signal N, 127 if not found, 124 after --timeout). stdin is forwarded when it is not " +
        "a terminal.\n" +
        "Examples: shuru exec dev -- python3 -c 'print(1)'\n" +
        "          shuru exec --connect unix:/tmp/agent.sock -e A=1 -- sh -c 'echo $A'",
    )
    .option(
      "--connect <target>",
      "a bare guest agent instead of a named sandbox: unix:PATH (an agent's --listen socket)",
    )
    .option("-t, --tty", "run on a pseudo-terminal with this terminal in raw mode", false)
    .option(
      "-e, --env <KEY=VALUE>",
      "set an environment variable (repeatable)",
      parseEnv,
    )
    .option("--cwd <dir>", "working directory in the guest (absolute)")
    .option("--timeout <duration>", "kill the command after this long (30s, 10m); exit 124")
    .option("--no-stdin", "do not forward our stdin (the command reads /dev/null)")
    .argument("[name]", "sandbox name (omit with --connect)")
    .argument("[command...]", "command and arguments (after --)")
    .action(async (name, rawRest, opts) => {
      const rest = guestArgv(rawRest);
      if (opts.cwd !== undefined && !opts.cwd.startsWith("/")) {
        throw new UserError(`Cannot use --cwd "${opts.cwd}": must be an absolute guest path`);
      }
      let timeoutMs: number | undefined;
      if (opts.timeout !== undefined) {
        try {
          timeoutMs = parseDuration(opts.timeout);
        } catch (err) {
          throw new UserError(`--timeout: ${(err as Error).message}`);
        }
      }
      const attach: AttachOptions = {
        tty: opts.tty,
        env: opts.env ?? {},
        ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
        stdin: opts.stdin,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      };
      let result: AttachResult;
      if (opts.connect === undefined) {
        if (name === undefined || rest.length === 0) {
          throw new UserError(
            "Cannot run: give a sandbox name and a command, e.g. `shuru exec dev -- ls /`",
          );
        }
        await using sb = await connectSandbox(name);
        result = await attachProcess(sb, rest, attach).catch((err) => {
          throw new UserError(`Cannot run in sandbox ${name}: ${(err as Error).message}`, {
            exitCode: 125,
            cause: err,
          });
        });
      } else {
        const argv = name === undefined ? rest : [name, ...rest];
        if (argv.length === 0) throw new UserError("Cannot run: give a command after --");
        const target = parseConnectTarget(opts.connect);
        await using agent = await AgentConnection.connectUnix(target.unix).catch((err) => {
          const reason = err instanceof Error ? err.message : String(err);
          throw new UserError(`Cannot connect to agent at ${target.unix}: ${reason}`, {
            exitCode: 125,
            cause: err,
          });
        });
        result = await attachAgentProcess(agent, argv, attach).catch((err) => {
          if (!(err instanceof ConnectionError)) throw err;
          throw new UserError(`Lost the agent connection: ${err.message}`, {
            exitCode: 125,
            cause: err,
          });
        });
      }
      if (result.timedOut) console.error(`shuru: timed out after ${opts.timeout}; killed`);
      // The command's exit code is ours; runCli has no other way to return it.
      Deno.exit(result.timedOut ? 124 : result.exitCode);
    });
  return cmd as unknown as Command;
}
