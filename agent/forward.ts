/**
 * Port forwarding: a TCP listener on 127.0.0.1 whose connections are each relayed through one
 * `forward` stream of the agent protocol to a TCP port inside the guest.
 *
 * @module
 */

import type { ForwardRequest, MuxStream } from "../proto/mod.ts";

/** Options of {@link startForward}. */
export interface ForwardOptions {
  /** Host port to bind on 127.0.0.1 (0 = any free port). */
  hostPort: number;
  /** Guest TCP port. */
  guestPort: number;
  /** Guest address. @default "127.0.0.1" */
  guestHost?: string;
}

/** A running forward; close it to stop listening and drop its connections. */
export class PortForward implements AsyncDisposable {
  /** The bound host port (useful with hostPort 0). */
  readonly hostPort: number;
  /** The guest port connections go to. */
  readonly guestPort: number;
  /** Resolves when the listener has stopped. */
  readonly done: Promise<void>;
  #listener: Deno.TcpListener;
  #conns = new Set<Deno.TcpConn>();
  #closed = false;

  /** @internal Use `AgentConnection.forward`. */
  constructor(
    listener: Deno.TcpListener,
    open: (req: ForwardRequest) => MuxStream,
    options: ForwardOptions,
  ) {
    this.#listener = listener;
    this.hostPort = (listener.addr as Deno.NetAddr).port;
    this.guestPort = options.guestPort;
    const req: ForwardRequest = { op: "forward", port: options.guestPort };
    if (options.guestHost) req.host = options.guestHost;
    this.done = (async () => {
      try {
        for await (const conn of listener) {
          this.#conns.add(conn);
          void relay(conn, open(req)).finally(() => this.#conns.delete(conn));
        }
      } catch (err) {
        if (!this.#closed) throw err;
      }
    })().catch(() => {});
  }

  /** Number of relayed connections currently open. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Stops listening and closes relayed connections. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
    await this.done;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Binds the listener and starts accepting. */
export function startForward(
  open: (req: ForwardRequest) => MuxStream,
  options: ForwardOptions,
): PortForward {
  if (!Number.isInteger(options.hostPort) || options.hostPort < 0 || options.hostPort > 65535) {
    throw new RangeError(`Cannot forward host port ${options.hostPort}: must be 0..65535`);
  }
  if (!Number.isInteger(options.guestPort) || options.guestPort < 1 || options.guestPort > 65535) {
    throw new RangeError(`Cannot forward to guest port ${options.guestPort}: must be 1..65535`);
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: options.hostPort });
  return new PortForward(listener, open, options);
}

/** Bytes read from a TCP connection per read. */
const READ_SIZE = 256 * 1024;

/**
 * Relays one TCP connection over one stream, half-closes included. Uses `conn.read` rather than
 * `conn.readable`: the latter closes the whole socket at EOF, which would cut off the reply
 * after the client half-closes.
 */
async function relay(conn: Deno.TcpConn, stream: MuxStream): Promise<void> {
  const up = (async () => {
    const w = stream.writable.getWriter();
    while (true) {
      const buf = new Uint8Array(READ_SIZE);
      const n = await conn.read(buf);
      if (n === null) break;
      await w.write(buf.subarray(0, n));
    }
    await w.close();
  })();
  const down = (async () => {
    for await (const chunk of stream.readable) {
      let rest = chunk;
      while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
    }
    await conn.closeWrite();
  })();
  try {
    await Promise.all([up, down, stream.result]);
  } catch {
    stream.reset({ code: "cancelled", message: "Forwarded connection closed" });
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}
