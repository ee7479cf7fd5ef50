/**
 * Port-forwarding endpoint: connects to a TCP port inside the guest; the agent relays the
 * connection's bytes over one protocol stream (see `relayConnection` in `guest/agent.ts`).
 *
 * @module
 */

import { AgentError, errorCodeOf } from "../proto/mod.ts";

/** Options for {@link connectGuestPort}. */
export interface ConnectOptions {
  /** Address to connect to. @default "127.0.0.1" */
  host?: string;
}

/**
 * Opens a TCP connection to `port` in the guest.
 *
 * @throws AgentError `connection_refused` when nothing listens there, or the mapped cause.
 */
export async function connectGuestPort(
  port: number,
  options: ConnectOptions = {},
): Promise<Deno.TcpConn> {
  const hostname = options.host ?? "127.0.0.1";
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new AgentError("invalid_argument", `Cannot connect to port ${port}: not in 1..65535`);
  }
  try {
    const conn = await Deno.connect({ hostname, port, transport: "tcp" });
    conn.setNoDelay(true);
    return conn;
  } catch (e) {
    const reason = e instanceof Error ? e.message.replace(/ \(os error \d+\).*$/s, "") : String(e);
    throw new AgentError(errorCodeOf(e), `Cannot connect to ${hostname}:${port}: ${reason}`, {
      cause: e,
    });
  }
}
