/**
 * `shuru run --stdio`: the control protocol on this process's stdin and stdout.
 *
 * @module
 */

import type { ControlServer } from "./server.ts";

/**
 * Serves `server` on stdin/stdout until stdin closes or a client asks for `shutdown`.
 * Nothing else may write to stdout meanwhile (logs go to stderr).
 */
export async function serveStdio(server: ControlServer): Promise<void> {
  const session = server.serve(Deno.stdin.readable, Deno.stdout.writable);
  await Promise.race([session.done, server.shutdownRequested]);
  await session.close();
}
