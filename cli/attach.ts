/**
 * Attaches this terminal (or our stdio) to a process in a sandbox: one loop,
 * {@linkcode attachTerminal}, for a process of the SDK (`shuru exec NAME`, `shuru shell NAME`)
 * and one of a bare agent connection (`shuru run`, `shuru exec --connect`). Raw mode and window
 * sizes for a terminal, our stdin forwarded, and a closed stdout or stderr (`| head -1`) treated
 * as a local process would suffer it: SIGPIPE for the command.
 *
 * @module
 */

import type { AgentConnection } from "../agent/mod.ts";
import type { Sandbox } from "../sdk/mod.ts";

/** What {@linkcode attachTerminal} needs of a process (the SDK's and the agent's both fit). */
export interface AttachableProcess {
  /** Its output (the terminal's, with a TTY). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Its error output (not read with a TTY: merged into stdout). */
  readonly stderr: ReadableStream<Uint8Array>;
  /** Its input; only touched when our stdin is forwarded. */
  readonly stdin: WritableStream<Uint8Array>;
  /** Resolves with its exit code (128+N after signal N). */
  wait(): Promise<{ exitCode: number }>;
  /** Signals its process group. */
  kill(signal: "SIGKILL" | "SIGPIPE"): Promise<void>;
  /** Resizes its terminal. */
  resize(rows: number, cols: number): Promise<void>;
}

/** Options of {@linkcode attachProcess} and {@linkcode attachAgentProcess}. */
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

/** TERM for a guest PTY: ours, else a common one. */
function terminalType(): string {
  return Deno.env.get("TERM") ?? "xterm-256color";
}

/** Whether our stdin goes to the process: always on a PTY, else when it is not a terminal. */
function forwardsStdin(options: AttachOptions): boolean {
  return options.tty || (options.stdin && !Deno.stdin.isTerminal());
}

async function writeAll(out: typeof Deno.stdout, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await out.write(data.subarray(off));
}

/**
 * Copies `from` to `to`. When `to` is a closed pipe (`shuru exec -- yes | head -1`), does what a
 * local process would suffer: SIGPIPE for the command, and stop copying.
 */
async function copyOut(
  proc: AttachableProcess,
  from: ReadableStream<Uint8Array>,
  to: typeof Deno.stdout,
): Promise<void> {
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
  } finally {
    reader.releaseLock();
  }
}

/** Copies our stdin to the process until either ends; stops reading once `stop` resolves. */
async function forwardStdin(proc: AttachableProcess, stop: Promise<unknown>): Promise<void> {
  const input = Deno.stdin.readable.getReader();
  const writer = proc.stdin.getWriter();
  // The process may end without reading all of it: release our stdin then (a pending read
  // rejects), so nothing keeps waiting on the terminal.
  void stop.finally(() => input.releaseLock());
  try {
    while (true) {
      const { value, done } = await input.read();
      if (done) break;
      await writer.write(value);
    }
    await writer.close();
  } catch {
    // The process ended, or our stdin was released: stop forwarding.
  }
}

/**
 * Attaches our stdio to `proc` until it exits: with `tty`, raw mode and window-size changes
 * (restored however it ends); our stdin forwarded when `forwardStdin`; stdout and stderr (only
 * stdout with `tty`) copied. `timeoutMs` kills it with SIGKILL.
 */
export async function attachTerminal(
  proc: AttachableProcess,
  options: { tty: boolean; forwardStdin: boolean; timeoutMs?: number },
): Promise<AttachResult> {
  const rawTty = options.tty && Deno.stdin.isTerminal();
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
    try {
      Deno.addSignalListener("SIGWINCH", onResize);
    } catch {
      // No SIGWINCH on this platform.
    }
  }
  const exited = proc.wait();
  try {
    const pumps = [copyOut(proc, proc.stdout, Deno.stdout)];
    if (!options.tty) pumps.push(copyOut(proc, proc.stderr, Deno.stderr));
    if (options.forwardStdin) void forwardStdin(proc, exited.catch(() => {}));
    const [status] = await Promise.all([exited, ...pumps]);
    return { exitCode: status.exitCode, timedOut };
  } finally {
    clearTimeout(timer);
    if (rawTty) {
      try {
        Deno.removeSignalListener("SIGWINCH", onResize);
      } catch {
        // Never added.
      }
      Deno.stdin.setRaw(false);
    }
  }
}

/** Runs `argv` in a named sandbox (through the SDK) with our stdio attached. */
export async function attachProcess(
  sandbox: Sandbox,
  argv: string[],
  options: AttachOptions,
): Promise<AttachResult> {
  const env = { ...options.env };
  if (options.tty) env.TERM ??= terminalType();
  const proc = await sandbox.spawn(argv, {
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.tty ? { tty: terminalSize() } : {}),
  });
  const forwardStdin = forwardsStdin(options);
  if (!forwardStdin) void proc.stdin.close().catch(() => {});
  return await attachTerminal(proc, {
    tty: options.tty,
    forwardStdin,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
}

/** Runs `argv` through a bare agent connection with our stdio attached. */
export async function attachAgentProcess(
  agent: AgentConnection,
  argv: string[],
  options: AttachOptions,
): Promise<AttachResult> {
  const forwardStdin = forwardsStdin(options);
  const proc = agent.spawn(argv, {
    ...(Object.keys(options.env).length > 0 ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: forwardStdin ? "piped" : "null",
    ...(options.tty ? { tty: { ...terminalSize(), term: terminalType() } } : {}),
  });
  return await attachTerminal(proc, {
    tty: options.tty,
    forwardStdin,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
}
