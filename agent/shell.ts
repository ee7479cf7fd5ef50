/**
 * Interactive sessions: a process on a guest PTY attached to this terminal (raw mode,
 * SIGWINCH → resize, terminal restored however the session ends).
 *
 * @module
 */

import type { AgentProcess, AgentSpawnOptions } from "./process.ts";

/** Options of `AgentConnection.shell`. */
export interface ShellOptions {
  /** Program to run. @default ["/bin/sh"] */
  argv?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Absolute working directory in the guest. */
  cwd?: string;
  /** TERM for the PTY. @default $TERM or "xterm-256color" */
  term?: string;
}

interface Spawner {
  spawn(argv: string[], options: AgentSpawnOptions): AgentProcess;
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

/** Runs `options.argv` on a PTY bound to Deno.stdin/stdout; returns the exit code. */
export async function runShell(sandbox: Spawner, options: ShellOptions): Promise<number> {
  const size = terminalSize();
  const isTty = Deno.stdin.isTerminal();
  const proc = sandbox.spawn(options.argv ?? ["/bin/sh"], {
    stdin: "piped",
    tty: {
      ...size,
      term: options.term ?? Deno.env.get("TERM") ?? "xterm-256color",
    },
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const onResize = () => {
    const { rows, cols } = terminalSize();
    void proc.resize(rows, cols).catch(() => {});
  };
  if (isTty) Deno.stdin.setRaw(true);
  try {
    Deno.addSignalListener("SIGWINCH", onResize);
  } catch {
    // No SIGWINCH on this platform.
  }
  const input = Deno.stdin.readable.getReader();
  try {
    const pumpIn = (async () => {
      const w = proc.stdin.getWriter();
      try {
        while (true) {
          const { value, done } = await input.read();
          if (done) break;
          await w.write(value);
        }
        await w.close();
      } catch {
        // The process ended; stop forwarding keystrokes.
      }
    })();
    const pumpOut = (async () => {
      for await (const chunk of proc.stdout) await writeAll(Deno.stdout, chunk);
    })();
    const status = await proc.wait();
    await pumpOut.catch(() => {});
    void pumpIn;
    return status.exitCode;
  } finally {
    try {
      Deno.removeSignalListener("SIGWINCH", onResize);
    } catch {
      // Never added.
    }
    if (isTty) Deno.stdin.setRaw(false);
    input.releaseLock();
  }
}

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}
