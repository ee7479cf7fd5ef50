/**
 * Runs this checkout's `shuru` CLI as a whole process, the way a user does, for benches that
 * time it: wall time, and the figures `-v` prints on stderr.
 *
 * @module
 */

import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

/** One finished `shuru` process. */
export interface ShuruRun {
  /** Wall time of the whole process, ms. */
  wall: number;
  /** Its standard error (where `-v` writes). */
  stderr: string;
}

/**
 * Runs `shuru ARGS` with `env` added to this process's environment and returns its wall time and stderr;
 * throws with the stderr when it fails. `wrap` runs it under another program (e.g.
 * `/usr/bin/time -f ...`).
 */
export async function runShuru(
  args: string[],
  options: { env: Record<string, string>; wrap?: string[] },
): Promise<ShuruRun> {
  const command = [
    ...(options.wrap ?? []),
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    "--config",
    join(ROOT, "deno.json"),
    join(ROOT, "main.ts"),
    ...args,
  ];
  const t0 = performance.now();
  const out = await new Deno.Command(command[0]!, {
    args: command.slice(1),
    env: options.env,
    stdout: "null",
    stderr: "piped",
  }).output();
  const wall = performance.now() - t0;
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`shuru ${args.join(" ")} failed:\n${stderr}`);
  return { wall, stderr };
}

/** The figures `shuru run -v` prints, in ms. */
export interface VerboseFigures {
  /** Each boot phase by its name (`assets`, `vmStarted`, `agentReady`, ...): the time it took. */
  boot: Record<string, number>;
  /** The guest's phases (`kernel`, `initramfs`, `rootMounted`, `agentStart`; cold boots
   * only): ms after QEMU's start. */
  guest: Record<string, number>;
  /** The command. */
  exec?: number;
  /** The guest's end. */
  shutdown?: number;
}

/** Reads the figures of a `shuru run -v` stderr. */
export function verboseFigures(stderr: string): VerboseFigures {
  const list = (re: RegExp) => {
    const out: Record<string, number> = {};
    for (const part of re.exec(stderr)?.[1]?.split(", ") ?? []) {
      const [name, ms] = part.trim().split(" ");
      if (name && ms !== undefined && Number.isFinite(Number(ms))) out[name] = Number(ms);
    }
    return out;
  };
  const ms = (re: RegExp) => {
    const m = re.exec(stderr);
    return m ? { value: Number(m[1]) } : undefined;
  };
  const exec = ms(/command ran (\d+) ms/);
  const shutdown = ms(/shutdown (\d+) ms/);
  return {
    boot: list(/boot phases \(ms each\): (.*?); total/),
    guest: list(/guest phases \([^)]*\): (.*)/),
    ...(exec ? { exec: exec.value } : {}),
    ...(shutdown ? { shutdown: shutdown.value } : {}),
  };
}
