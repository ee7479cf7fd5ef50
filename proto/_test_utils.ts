/**
 * Test helpers: a connected pair of real Unix sockets, and two Muxes over it.
 *
 * @module
 */

import { Mux, type MuxOptions } from "./mux.ts";

/** Two connected ends of a real Unix socket in a fresh temp dir. */
export interface UnixPair extends AsyncDisposable {
  /** The accepted end. */
  a: Deno.UnixConn;
  /** The connecting end. */
  b: Deno.UnixConn;
}

/** Creates a connected Unix socket pair (removed on dispose). */
export async function unixPair(): Promise<UnixPair> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-proto-" });
  const path = `${dir}/s.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const [a, b] = await Promise.all([
    listener.accept(),
    Deno.connect({ transport: "unix", path }),
  ]);
  listener.close();
  return {
    a: a as Deno.UnixConn,
    b,
    async [Symbol.asyncDispose]() {
      for (const c of [a, b]) {
        try {
          c.close();
        } catch {
          // Already closed by the Mux.
        }
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A host and a guest Mux talking over a real Unix socket pair. */
export interface MuxPair extends AsyncDisposable {
  /** The host end (opens odd streams). */
  host: Mux;
  /** The guest end. */
  guest: Mux;
}

/** Connects a host Mux and a guest Mux over a fresh Unix socket pair. */
export async function muxPair(
  options: { host?: Partial<MuxOptions>; guest?: Partial<MuxOptions> } = {},
): Promise<MuxPair> {
  const pair = await unixPair();
  const [host, guest] = await Promise.all([
    Mux.connect(pair.b, { role: "host", version: "test-host", ...options.host }),
    Mux.connect(pair.a, { role: "guest", version: "test-guest", ...options.guest }),
  ]);
  return {
    host,
    guest,
    async [Symbol.asyncDispose]() {
      await host.close();
      await guest.close();
      await pair[Symbol.asyncDispose]();
    },
  };
}

export { readAll } from "../io/mod.ts";
