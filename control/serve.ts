/**
 * Serves the control protocol for a bare guest agent (no VM, no disk): connects to the agent's
 * Unix socket and listens on a control socket, or speaks on stdin/stdout. The supervisor and
 * `shuru run --stdio` build the same thing with their own backend additions (checkpoint,
 * shutdown).
 *
 * Run: `deno run -A control/serve.ts --agent unix:AGENT.sock (--listen unix:CONTROL.sock | --stdio)`
 *
 * @module
 */

import { AgentConnection } from "../agent/mod.ts";
import { VERSION } from "../host/mod.ts";
import { agentBackend, type AgentBackendOptions } from "./agent_backend.ts";
import { ControlServer } from "./server.ts";
import { listenControlSocket } from "./socket.ts";
import { serveStdio } from "./stdio.ts";

/** Options of {@linkcode serveAgent}. */
export interface ServeAgentOptions extends AgentBackendOptions {
  /** Control socket path to listen on. */
  listen?: string;
  /** Speak on stdin/stdout instead (ends when stdin closes). */
  stdio?: boolean;
  /** Log lines (default: stderr). */
  log?: (line: string) => void;
}

/**
 * Connects to the agent at `agentSocket` and serves it until `shutdown`, the agent connection
 * ends or (with `stdio`) stdin closes.
 */
export async function serveAgent(agentSocket: string, options: ServeAgentOptions): Promise<void> {
  const log = options.log ?? ((l: string) => console.error(l));
  await using agent = await AgentConnection.connectUnix(agentSocket);
  const server = new ControlServer(agentBackend(agent, options), {
    serverInfo: { name: "shuru", version: VERSION },
    log,
  });
  try {
    if (options.stdio) {
      await Promise.race([serveStdio(server), agent.closed]);
    } else if (options.listen) {
      await using _socket = await listenControlSocket(server, options.listen);
      await Promise.race([server.shutdownRequested, agent.closed]);
    } else {
      throw new TypeError("Cannot serve: pass listen or stdio");
    }
  } finally {
    await server.close();
  }
}

if (import.meta.main) {
  const args = Deno.args;
  const value = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const agent = value("--agent")?.replace(/^unix:/, "");
  const listen = value("--listen")?.replace(/^unix:/, "");
  const stdio = args.includes("--stdio");
  if (!agent || (!listen && !stdio)) {
    console.error(
      "usage: control/serve.ts --agent unix:AGENT.sock (--listen unix:CONTROL.sock | --stdio)",
    );
    Deno.exit(2);
  }
  await serveAgent(agent, {
    ...(listen ? { listen } : {}),
    stdio,
    // Here nothing owns a VM: shutdown just ends this server.
    shutdown: () => Promise.resolve(),
  });
  Deno.exit(0);
}
