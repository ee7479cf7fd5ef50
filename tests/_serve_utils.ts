/**
 * Helpers for integration tests that run `shuru nbd serve` and the store CLI as subprocesses
 * against real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy).
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = `${ROOT}node_modules/.bin/deno`;
const MAIN = `${ROOT}main.ts`;

const TOOL_PACKAGES: Record<string, string> = {
  "qemu-io": "qemu-utils",
  "qemu-img": "qemu-utils",
  "nbdinfo": "libnbd-bin",
  "nbdcopy": "libnbd-bin",
};

/** Fails (never skips) when `tool` is missing, saying how to install it. */
export async function requireTool(tool: string): Promise<void> {
  try {
    await new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).output();
  } catch {
    throw new Error(
      `${tool} is required for this test: apt-get install ${TOOL_PACKAGES[tool] ?? tool}`,
    );
  }
}

/** Output of a finished command. */
export interface Output {
  /** Exit code. */
  code: number;
  /** Standard output as text. */
  stdout: string;
  /** Standard error as text. */
  stderr: string;
}

/** Runs `cmd args` to completion. */
export async function run(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
): Promise<Output> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    ...(env ? { env } : {}),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs the shuru CLI with data home `home`. */
export function shuru(home: string, args: string[]): Promise<Output> {
  return run(DENO, ["run", "-A", "--quiet", MAIN, ...args], { SHURU_HOME: home });
}

/** The NBD URI of a Unix socket. */
export function nbdUri(socket: string, exportName = ""): string {
  return `nbd+unix:///${exportName}?socket=${socket}`;
}

/** A running `shuru nbd serve`. */
export class ServeProcess {
  /** Socket path. */
  readonly socket: string;
  /** The child process. */
  readonly child: Deno.ChildProcess;
  #stderr: Promise<string>;

  private constructor(socket: string, child: Deno.ChildProcess) {
    this.socket = socket;
    this.child = child;
    this.#stderr = new Response(child.stderr).text();
  }

  /** Starts `shuru nbd serve --socket SOCKET ...args` and waits until the socket accepts. */
  static async start(home: string, socket: string, args: string[]): Promise<ServeProcess> {
    const child = new Deno.Command(DENO, {
      args: ["run", "-A", "--quiet", MAIN, "nbd", "serve", "--socket", socket, ...args],
      env: { SHURU_HOME: home },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const p = new ServeProcess(socket, child);
    const deadline = Date.now() + 120_000;
    while (true) {
      try {
        const conn = await Deno.connect({ transport: "unix", path: socket });
        conn.close();
        return p;
      } catch {
        const status = await Promise.race([
          child.status,
          new Promise<null>((r) => setTimeout(() => r(null), 50)),
        ]);
        if (status !== null) {
          throw new Error(`shuru nbd serve exited with ${status.code}: ${await p.#stderr}`);
        }
        if (Date.now() > deadline) {
          p.kill("SIGKILL");
          throw new Error(`shuru nbd serve did not listen on ${socket}: ${await p.stop()}`);
        }
      }
    }
  }

  /** The NBD URI. */
  uri(exportName = ""): string {
    return nbdUri(this.socket, exportName);
  }

  /** Sends a signal (ignored if the process is gone). */
  kill(signal: Deno.Signal): void {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
  }

  /** Sends `signal` (default SIGTERM), waits for exit; returns the exit code and stderr. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<{ code: number; stderr: string }> {
    this.kill(signal);
    const status = await this.child.status;
    return { code: status.code, stderr: await this.#stderr };
  }
}

/** A temp folder with a data home inside, removed on dispose. */
export async function testHome(): Promise<AsyncDisposable & { path: string; home: string }> {
  const path = await Deno.makeTempDir({ prefix: "shuru-it-" });
  return {
    path,
    home: `${path}/home`,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Deterministic pseudo-random bytes. */
export function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  let x = (seed * 2 + 1) >>> 0;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return out;
}

/** Counts chunk files in the store of data home `home`. */
export async function countChunks(home: string): Promise<number> {
  let n = 0;
  try {
    for await (const shard of Deno.readDir(`${home}/store/chunks`)) {
      for await (const _ of Deno.readDir(`${home}/store/chunks/${shard.name}`)) n++;
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return n;
}

/** `true` when two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
