/**
 * Runs host tools for the asset build, keeping their output for error messages.
 *
 * @module
 */

import { AssetError } from "./errors.ts";

/** Options of {@linkcode runTool}. */
export interface RunToolOptions {
  /** Bytes written to the tool's stdin. */
  stdin?: Uint8Array;
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Called with each chunk of stderr text as it arrives (progress display). */
  onStderr?: (text: string) => void;
  /** Called with the child's pid once it runs; stdin is written after it resolves. */
  onSpawn?: (pid: number) => Promise<void>;
}

/** Keeps at most this many bytes of a tool's stderr for the error message. */
const STDERR_TAIL = 4000;

/**
 * Runs `cmd args...`, returns its stdout; throws {@linkcode AssetError} `command_failed`
 * with the tail of stderr when it exits non-zero.
 */
export async function runTool(
  cmd: string,
  args: string[],
  options: RunToolOptions = {},
): Promise<Uint8Array> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      env: options.env,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new AssetError("command_failed", `Cannot run ${cmd}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let setupError: unknown;
  const writing = (async () => {
    if (options.onSpawn) {
      try {
        await options.onSpawn(child.pid);
      } catch (err) {
        setupError = err;
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        return;
      }
    }
    if (!options.stdin) return;
    const writer = child.stdin.getWriter();
    try {
      await writer.write(options.stdin);
      await writer.close();
    } catch {
      // The tool exited early; its exit status says why.
    }
  })();
  const stdoutPromise = new Response(child.stdout).bytes();
  let stderrTail = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stderr) {
    const text = decoder.decode(chunk, { stream: true });
    options.onStderr?.(text);
    stderrTail = (stderrTail + text).slice(-STDERR_TAIL);
  }
  const [status, stdout] = await Promise.all([child.status, stdoutPromise, writing]);
  if (setupError) throw setupError;
  if (!status.success) {
    throw new AssetError(
      "command_failed",
      `Cannot complete \`${cmd} ${args.join(" ")}\`: exit status ${status.code}\n` +
        stderrTail.trim(),
    );
  }
  return stdout;
}
