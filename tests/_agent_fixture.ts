/**
 * Test fixture: the real guest agent (`guest/main.ts --listen unix:SOCK`) as a subprocess on
 * this host, in a private temp dir, plus helpers to connect a `AgentConnection` to it and to measure
 * its memory. No mocks: every test talks to the same code that runs in the VM.
 *
 * @module
 */

import { AgentConnection } from "../agent/mod.ts";

const AGENT_MAIN = new URL("../guest/main.ts", import.meta.url).pathname;

/** A running agent. */
export interface AgentFixture extends AsyncDisposable {
  /** Private temp dir (the socket lives here; tests may use it for files). */
  dir: string;
  /** Unix socket path the agent listens on. */
  socket: string;
  /** The agent's pid (for RSS). */
  pid: number;
  /** Connects a new AgentConnection. */
  connect(): Promise<AgentConnection>;
  /** Current resident set size of the agent process in bytes. */
  rss(): Promise<number>;
  /** What the agent printed to stderr so far. */
  log(): string;
  /** Sends `signal` to the agent and waits for it to exit (e.g. SIGKILL: as if the VM died). */
  kill(signal: Deno.Signal): Promise<void>;
}

/** Reads VmRSS of `pid` from /proc, in bytes. */
export async function rssOf(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = status.match(/^VmRSS:\s+(\d+) kB$/m);
  if (!m) throw new Error(`Cannot read VmRSS of pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Starts the agent and waits until its socket accepts connections. */
export async function startAgent(): Promise<AgentFixture> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-agent-test-" });
  const socket = `${dir}/agent.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", AGENT_MAIN, "--listen", `unix:${socket}`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const logDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) log += dec.decode(chunk, { stream: true });
  })();
  const fixture: AgentFixture = {
    dir,
    socket,
    pid: child.pid,
    connect: () => AgentConnection.connectUnix(socket),
    rss: () => rssOf(child.pid),
    log: () => log,
    async kill(signal) {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      await child.status;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await logDone;
      await Deno.remove(dir, { recursive: true });
    },
  };
  const deadline = Date.now() + 60_000;
  while (true) {
    try {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      conn.close();
      break;
    } catch {
      if (Date.now() > deadline) {
        await fixture[Symbol.asyncDispose]();
        throw new Error(`Cannot start the guest agent (${AGENT_MAIN}); its log:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return fixture;
}

/** UTF-8 decode. */
export function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}
