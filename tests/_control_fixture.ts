/**
 * Test fixture for the control protocol: the REAL guest agent (`guest/main.ts --listen
 * unix:SOCK`) as a subprocess on this host, the host `Sandbox` connected to it, and a
 * `ControlServer` on top listening on a real control socket (mode 0600) in a private temp dir.
 *
 * @module
 */

import { Sandbox as AgentConnection } from "../sandbox/mod.ts";
import { agentBackend, type AgentBackendOptions } from "../control/agent_backend.ts";
import { ControlServer, type ControlServerOptions } from "../control/server.ts";
import { type ControlSocket, listenControlSocket } from "../control/socket.ts";

/** The guest agent's entry point (same file as in the VM). */
export const AGENT_MAIN = new URL("../guest/main.ts", import.meta.url).pathname;

/** The repository root. */
export const REPO = new URL("..", import.meta.url).pathname;

/** A running agent with a control server on top. */
export interface ControlFixture extends AsyncDisposable {
  /** Private temp dir. */
  dir: string;
  /** The agent's socket. */
  agentSocket: string;
  /** The control socket. */
  controlSocket: string;
  /** The server. */
  server: ControlServer;
  /** The agent connection the server uses. */
  agent: AgentConnection;
  /** What the agent logged. */
  log(): string;
  /** Kills the agent process (SIGKILL), as if the VM died. */
  killAgent(): Promise<void>;
}

async function waitForSocket(path: string, deadlineMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (true) {
    try {
      const conn = await Deno.connect({ transport: "unix", path });
      conn.close();
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`Cannot start the guest agent (${AGENT_MAIN}); its log:\n${log()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Starts agent + control server. */
export async function startControl(
  options: { backend?: AgentBackendOptions; server?: ControlServerOptions } = {},
): Promise<ControlFixture> {
  try {
    await Deno.stat(AGENT_MAIN);
  } catch {
    throw new Error(
      `Cannot find the guest agent at ${AGENT_MAIN}: merge the agent branch (guest/main.ts)`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "shuru-control-test-" });
  const agentSocket = `${dir}/agent.sock`;
  const controlSocket = `${dir}/control.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", AGENT_MAIN, "--listen", `unix:${agentSocket}`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const logDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) log += dec.decode(chunk, { stream: true });
  })();
  let agent: AgentConnection | undefined;
  let socket: ControlSocket | undefined;
  let server: ControlServer | undefined;
  const dispose = async () => {
    await socket?.close();
    await server?.close();
    await agent?.close().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await logDone;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitForSocket(agentSocket, 60_000, () => log);
    agent = await AgentConnection.connectUnix(agentSocket);
    server = new ControlServer(agentBackend(agent, options.backend), options.server);
    socket = await listenControlSocket(server, controlSocket);
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    dir,
    agentSocket,
    controlSocket,
    server,
    agent,
    log: () => log,
    async killAgent() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
    },
    [Symbol.asyncDispose]: dispose,
  };
}

/** A raw newline-delimited JSON client on a control socket, for exact wire checks. */
export class RawClient implements AsyncDisposable {
  #conn: Deno.UnixConn;
  #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  #enc = new TextEncoder();
  /** Every notification seen while waiting for responses. */
  readonly notifications: Array<Record<string, unknown>> = [];

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#reader = conn.readable.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Connects. */
  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path }));
  }

  /** Sends one raw line (newline added). */
  async sendLine(line: string): Promise<void> {
    await this.#conn.write(this.#enc.encode(line + "\n"));
  }

  /** Next message. */
  async next(): Promise<Record<string, unknown>> {
    while (!this.#buf.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("Cannot read: the server closed the connection");
      this.#buf += value;
    }
    const i = this.#buf.indexOf("\n");
    const line = this.#buf.slice(0, i);
    this.#buf = this.#buf.slice(i + 1);
    return JSON.parse(line);
  }

  /** Reads until the response with `id`, keeping notifications. */
  async response(id: unknown): Promise<Record<string, unknown>> {
    while (true) {
      const m = await this.next();
      if ("id" in m && m.id === id && !("method" in m)) return m;
      this.notifications.push(m);
    }
  }

  /** Closes. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
