/**
 * Test helpers that run the real `shuru` CLI as a subprocess, each test with its own data home
 * (store, instances) but the one set of guest assets built by `./shuru init` (`run-tests` builds
 * it before the suite), so no test rebuilds the guest image.
 *
 * @module
 */

import { join } from "node:path";
import { dataHome } from "../host/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = join(ROOT, "main.ts");
const CONFIG = join(ROOT, "deno.json");

/** What a finished CLI run printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A private data home for one test; remove with `await using`. */
export class TestHome implements AsyncDisposable {
  readonly dir: string;
  readonly #env: Record<string, string>;
  private constructor(dir: string, env: Record<string, string>) {
    this.dir = dir;
    this.#env = env;
  }
  /** A new home; `env` is added to every run's environment (e.g. `SHURU_NET_LINK`). */
  static async create(options: { env?: Record<string, string> } = {}): Promise<TestHome> {
    return new TestHome(
      await Deno.makeTempDir({ prefix: "shuru-test-home-" }),
      options.env ?? {},
    );
  }
  /** Environment for a CLI run against this home. */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      SHURU_HOME: this.dir,
      SHURU_ASSETS: Deno.env.get("SHURU_ASSETS") ?? join(dataHome(), "assets"),
      // KVM fails mid-boot on these (nested) hosts: see FINDINGS.md.
      SHURU_ACCEL: Deno.env.get("SHURU_ACCEL") ?? "tcg",
      ...this.#env,
      ...extra,
    };
  }
  /** Runs `shuru ARGS` to completion. */
  async run(
    args: string[],
    options: { stdin?: string; cwd?: string; env?: Record<string, string> } = {},
  ): Promise<CliResult> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "--config", CONFIG, MAIN, ...args],
      env: this.env(options.env),
      cwd: options.cwd ?? ROOT,
      stdin: options.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (options.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(options.stdin));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }
  /** Starts `shuru ARGS` and returns the child (stdout/stderr piped, stdin as asked). */
  spawn(
    args: string[],
    options: { cwd?: string; stdin?: "piped" | "null" } = {},
  ): Deno.ChildProcess {
    return new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "--config", CONFIG, MAIN, ...args],
      env: this.env(),
      cwd: options.cwd ?? ROOT,
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** The command line of the shuru CLI, for tests that run it under tmux or script. */
export function shuruCommandLine(): string[] {
  return [Deno.execPath(), "run", "-A", "--quiet", "--config", CONFIG, MAIN];
}

/** Fails with the install line when `tool` is missing. */
export async function requireTool(tool: string, aptPackage: string): Promise<void> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `command -v ${tool}`],
    stdout: "null",
    stderr: "null",
  }).output();
  if (!out.success) {
    throw new Error(`${tool} is missing; install it with: apt-get install ${aptPackage}`);
  }
}

/** Lists QEMU processes whose command line mentions `needle`. */
export async function qemuProcessesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      if (cmd.includes("qemu-system") && cmd.includes(needle)) pids.push(Number(e.name));
    } catch { /* exited */ }
  }
  return pids;
}
