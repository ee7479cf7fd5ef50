/**
 * Attaches this terminal (or our stdio) to a process in a named sandbox, through the SDK: used
 * by `shuru exec NAME` and `shuru shell NAME`; or through a bare agent connection
 * (`shuru exec --connect`, `shuru run`).
 *
 * @module
 */

import type { Sandbox, SandboxProcess } from "../sdk/mod.ts";
import type { AgentConnection } from "../agent/mod.ts";

/** Options of {@linkcode attachProcess}. */
export interface AttachOptions {
  /** Run on a PTY with our terminal in raw mode. */
  tty: boolean;
  /** Extra environment variables. */
  env: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** Forward our stdin (when not a PTY); otherwise the process reads EOF at once. */
  stdin: boolean;
  /** Kill the process (SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
}

/** How an attached process ended. */
export interface AttachResult {
  /** Exit code (128+N after signal N). */
  exitCode: number;
  /** True when `timeoutMs` killed it. */
  timedOut: boolean;
}

function terminalSize(): { rows: number; cols: number } {
  try {
    const { rows, columns } = Deno.consoleSize();
    if (rows > 0 && columns > 0) return { rows, cols: columns };
  } catch {
    // Not a terminal.
  }
  return { rows: 24, cols: 80 };
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

async function pumpOut(stream: ReadableStream<Uint8Array>, out: typeof Deno.stdout) {
  for await (const chunk of stream) await writeAll(out, chunk);
}

/** Runs `argv` in `sandbox` with our stdio attached and returns how it ended. */
export async function attachProcess(
  sandbox: Sandbox,
  argv: string[],
  options: AttachOptions,
): Promise<AttachResult> {
  const rawTty = options.tty && Deno.stdin.isTerminal();
  const env = { ...options.env };
  if (options.tty) env.TERM ??= Deno.env.get("TERM") ?? "xterm-256color";
  const proc: SandboxProcess = await sandbox.spawn(argv, {
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.tty ? { tty: terminalSize() } : {}),
  });
  let timedOut = false;
  const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    void proc.kill("SIGKILL").catch(() => {});
  }, options.timeoutMs);
  const onResize = () => {
    const { rows, cols } = terminalSize();
    void proc.resize(rows, cols).catch(() => {});
  };
  if (rawTty) {
    Deno.stdin.setRaw(true);
    Deno.addSignalListener("SIGWINCH", onResize);
  }
  try {
    const outputs = [pumpOut(proc.stdout, Deno.stdout), pumpOut(proc.stderr, Deno.stderr)];
    const forwardStdin = options.tty || (options.stdin && !Deno.stdin.isTerminal());
    if (forwardStdin) {
      // Not awaited: the process may exit without reading all of it.
      void Deno.stdin.readable.pipeTo(proc.stdin).catch(() => {});
    } else {
      void proc.stdin.close().catch(() => {});
    }
    const [status] = await Promise.all([proc.wait(), ...outputs]);
    return { exitCode: status.exitCode, timedOut };
  } finally {
    clearTimeout(timer);
    if (rawTty) {
      Deno.removeSignalListener("SIGWINCH", onResize);
      Deno.stdin.setRaw(false);
    }
  }
}

/**
 * Runs `argv` through a bare agent connection with our stdio attached: a PTY session with
 * `tty`, otherwise piped streams (stdin forwarded when it is not a terminal). Returns the
 * exit code.
 */
export async function attachAgentProcess(
  sandbox: AgentConnection,
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
