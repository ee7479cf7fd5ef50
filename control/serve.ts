/**
 * The control server wired to an agent connection, the one way every front end does it: the
 * supervisor of a named sandbox (on its control socket), `shuru run --stdio` (on stdin/stdout),
 * a bare guest agent (this module run as a program) and the tests' fixture. The caller adds what
 * its sandbox can do besides the agent (`checkpoint`, `shutdown`, `info`).
 *
 * Run: `deno run -A control/serve.ts --agent unix:AGENT.sock (--listen unix:CONTROL.sock | --stdio)`
 *
 * @module
 */

import { AgentConnection } from "../agent/mod.ts";
import { VERSION } from "../host/mod.ts";
import { agentBackend, type AgentBackendOptions } from "./agent_backend.ts";
import { ControlServer, type ControlServerOptions } from "./server.ts";
import { type ControlSocket, listenControlSocket } from "./socket.ts";
import { serveStdio } from "./stdio.ts";

/** Options of {@linkcode serveControl}. */
export interface ServeControlOptions extends AgentBackendOptions {
  /** Listen on this control socket (mode 0600). */
  listen?: string;
  /** With `listen`: replace a stale file there (a crashed supervisor's socket). */
  replace?: boolean;
  /** Speak on stdin/stdout instead (ends when stdin closes). */
  stdio?: boolean;
  /** Log lines (default: stderr). */
  log?: (line: string) => void;
  /** Limits and clock of the server (tests). */
  server?: Pick<ControlServerOptions, "clock" | "limits">;
  /**
   * Take in the processes the agent keeps (a sandbox resumed from a memory checkpoint): they
   * appear in `ps` with their pids, their buffered output replayed.
   */
  adopt?: boolean;
}

/** A control server serving an agent connection; dispose (or close) to stop it. */
export interface ControlService extends AsyncDisposable {
  /** The server (its sessions, for idle checks). */
  readonly server: ControlServer;
  /** The socket it listens on, with `listen`. */
  readonly socket: ControlSocket | undefined;
  /**
   * Resolves with why it should stop: a client asked for `shutdown`, the agent connection
   * ended, or (with `stdio`) stdin closed.
   */
  readonly done: Promise<string>;
  /** Closes the socket, every session and every process. */
  close(): Promise<void>;
}

/**
 * Serves `agent` through the control protocol on a socket (`listen`) or stdin/stdout
 * (`stdio`), until {@linkcode ControlService.close}.
 */
export async function serveControl(
  agent: AgentConnection,
  options: ServeControlOptions,
): Promise<ControlService> {
  if (!options.listen === !options.stdio) {
    throw new TypeError("Cannot serve the control protocol: pass exactly one of listen and stdio");
  }
  const log = options.log ?? ((l: string) => console.error(l));
  const backend = agentBackend(agent, options);
  const server = new ControlServer(backend, {
    ...options.server,
    serverInfo: { name: "shuru", version: VERSION },
    log,
  });
  if (options.adopt && backend.adopt) {
    const adopted = server.processes.adopt(await backend.adopt());
    if (adopted.length > 0) {
      log(`took in ${adopted.length} running process(es): ${adopted.map((r) => r.pid).join(" ")}`);
    }
  }
  let socket: ControlSocket | undefined;
  const ended: Promise<string>[] = [agent.closed.then(() => "the agent connection closed")];
  if (options.listen) {
    try {
      socket = await listenControlSocket(server, options.listen, { replace: options.replace });
    } catch (err) {
      await server.close();
      throw err;
    }
    ended.push(server.shutdownRequested.then(() => "shutdown requested"));
  } else {
    ended.push(serveStdio(server).then(() => "stdin closed or shutdown requested"));
  }
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      await socket?.close();
      await server.close();
    })();
  return {
    server,
    socket,
    done: Promise.race(ended),
    close,
    [Symbol.asyncDispose]: close,
  };
}

if (import.meta.main) {
  const args = Deno.args;
  const value = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const agentSocket = value("--agent")?.replace(/^unix:/, "");
  const listen = value("--listen")?.replace(/^unix:/, "");
  const stdio = args.includes("--stdio");
  if (!agentSocket || (!listen && !stdio)) {
    console.error(
      "usage: control/serve.ts --agent unix:AGENT.sock (--listen unix:CONTROL.sock | --stdio)",
    );
    Deno.exit(2);
  }
  await using agent = await AgentConnection.connectUnix(agentSocket);
  await using service = await serveControl(agent, {
    ...(listen ? { listen } : { stdio: true }),
    // Here nothing owns a VM: shutdown just ends this server.
    shutdown: () => Promise.resolve(),
  });
  await service.done;
  await service.close();
  await agent.close();
  Deno.exit(0);
}
