/**
 * `shuru exec`: attach to a running guest agent and run one command in it; stdout/stderr go to
 * ours and its exit code becomes ours.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { UserError } from "./errors.ts";
import { ConnectionError, Sandbox } from "../sandbox/mod.ts";

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

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

/** Builds the `exec` subcommand. */
export function execCommand(): Command {
  const cmd = new Command("exec")
    .description(
      "Run a command in a running sandbox through its guest agent. The command's stdout and " +
        "stderr are streamed to ours and its exit code becomes shuru's (128+N if killed by " +
        "signal N, 127 if not found). stdin is forwarded when it is not a terminal. " +
        "Example: shuru exec --connect unix:/tmp/agent.sock -e A=1 -- sh -c 'echo $A'",
    )
    .requiredOption("--connect <target>", "agent address: unix:PATH (an agent's --listen socket)")
    .option("-t, --tty", "run on a pseudo-terminal with this terminal in raw mode", false)
    .option(
      "-e, --env <KEY=VALUE>",
      "set an environment variable (repeatable)",
      parseEnv,
    )
    .option("--cwd <dir>", "working directory in the guest (absolute)")
    .option("--no-stdin", "do not forward our stdin (the command reads /dev/null)")
    .argument("<command...>", "command and arguments (put them after --)")
    .action(async (argv, opts) => {
      const target = parseConnectTarget(opts.connect);
      if (opts.cwd !== undefined && !opts.cwd.startsWith("/")) {
        throw new UserError(`Cannot use --cwd "${opts.cwd}": must be an absolute guest path`);
      }
      let sandbox: Sandbox;
      try {
        sandbox = await Sandbox.connectUnix(target.unix);
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        throw new UserError(`Cannot connect to agent at ${target.unix}: ${reason}`, {
          exitCode: 125,
          cause: err,
        });
      }
      let code: number;
      try {
        code = await run(sandbox, argv, { ...opts, env: opts.env ?? {} });
      } catch (err) {
        if (err instanceof ConnectionError) {
          throw new UserError(`Lost the agent connection: ${err.message}`, {
            exitCode: 125,
            cause: err,
          });
        }
        throw err;
      } finally {
        await sandbox.close();
      }
      // The command's exit code is ours; runCli has no other way to return it.
      Deno.exit(code);
    });
  return cmd as unknown as Command;
}

async function run(
  sandbox: Sandbox,
  argv: string[],
  opts: { tty: boolean; env: Record<string, string>; cwd?: string; stdin: boolean },
): Promise<number> {
  const base = {
    ...(Object.keys(opts.env).length > 0 ? { env: opts.env } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  };
  if (opts.tty) return await sandbox.shell({ argv, ...base });
  const pipeStdin = opts.stdin && !Deno.stdin.isTerminal();
  const proc = sandbox.spawn(argv, { ...base, stdin: pipeStdin ? "piped" : "null" });
  // When our stdout/stderr is a closed pipe (`shuru exec -- yes | head -1`), do what a local
  // process would suffer: SIGPIPE for the command, and stop copying.
  const copy = async (from: ReadableStream<Uint8Array>, to: typeof Deno.stdout) => {
    const reader = from.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        await writeAll(to, value);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
      await proc.kill("SIGPIPE").catch(() => {});
      await reader.cancel().catch(() => {});
    }
  };
  const pumps = [copy(proc.stdout, Deno.stdout), copy(proc.stderr, Deno.stderr)];
  if (pipeStdin) {
    // Not awaited: the process may exit without reading all of stdin.
    void Deno.stdin.readable.pipeTo(proc.stdin).catch(() => {});
  }
  const [status] = await Promise.all([proc.wait(), ...pumps]);
  return status.exitCode;
}
