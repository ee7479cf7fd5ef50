/**
 * Test fixture for the control protocol: the REAL guest agent (`guest/main.ts --listen
 * unix:SOCK`) as a subprocess on this host, the host `Sandbox` connected to it, and a
 * `ControlServer` on top listening on a real control socket (mode 0600) in a private temp dir.
 *
 * @module
 */

import { AgentConnection } from "../agent/mod.ts";
import {
  type AgentBackendOptions,
  type ControlServer,
  type ControlService,
  serveControl,
  type ServeControlOptions,
} from "../control/mod.ts";
import { startAgent } from "./_agent_fixture.ts";
import { LineReader } from "./_lines.ts";

/** The repository root. */
export const REPO = new URL("..", import.meta.url).pathname;

/** A running agent with a control server on top. */
export interface ControlFixture extends AsyncDisposable {
  /** Private temp dir. */
  dir: string;
  /** The agent's socket. */
  agentSocket: string;
  /** Path of the control socket the server listens on (mode 0600). */
  controlSocket: string;
  /** The control server (its sessions and processes, for checks). */
  server: ControlServer;
  /** The agent connection the server uses. */
  agent: AgentConnection;
  /** What the agent logged. */
  log(): string;
  /** Kills the agent process (SIGKILL), as if the VM died. */
  killAgent(): Promise<void>;
}

/** Starts agent + control server. */
export async function startControl(
  options: { backend?: AgentBackendOptions; server?: ServeControlOptions["server"] } = {},
): Promise<ControlFixture> {
  // The agent process is the agent tests' fixture: one way to start it for every suite.
  const agentProcess = await startAgent();
  const dir = agentProcess.dir;
  const agentSocket = agentProcess.socket;
  const controlSocket = `${dir}/control.sock`;
  let agent: AgentConnection | undefined;
  let service: ControlService | undefined;
  const dispose = async () => {
    await service?.close();
    await agent?.close().catch(() => {});
    await agentProcess[Symbol.asyncDispose]();
  };
  try {
    agent = await AgentConnection.connectUnix(agentSocket);
    service = await serveControl(agent, {
      listen: controlSocket,
      ...options.backend,
      ...(options.server ? { server: options.server } : {}),
      log: () => {},
    });
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    dir,
    agentSocket,
    controlSocket,
    server: service.server,
    agent,
    log: agentProcess.log,
    killAgent: () => agentProcess.kill("SIGKILL"),
    [Symbol.asyncDispose]: dispose,
  };
}

/** A raw newline-delimited JSON client on a control socket, for exact wire checks. */
export class RawClient implements AsyncDisposable {
  #conn: Deno.UnixConn;
  #lines: LineReader;
  #enc = new TextEncoder();
  /** Every notification seen while waiting for responses. */
  readonly notifications: Array<Record<string, unknown>> = [];

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#lines = new LineReader(conn.readable);
  }

  /** Connects to the control socket at `path`. */
  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path }));
  }

  /** Sends one raw line (newline added). */
  async sendLine(line: string): Promise<void> {
    await this.#conn.write(this.#enc.encode(line + "\n"));
  }

  /** Next message. */
  next(): Promise<Record<string, unknown>> {
    return this.#lines.nextJson(() => new Error("Cannot read: the server closed the connection"));
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
    await this.#lines.cancel().catch(() => {});
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
