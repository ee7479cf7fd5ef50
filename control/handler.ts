/**
 * What a request handler sees: the narrow views of its session and server, its params and its
 * context, and what it returns. The session (session.ts) dispatches to the handlers
 * (handlers.ts) through these types alone.
 *
 * @module
 */

import type { BackendWatch, ControlBackend } from "./backend.ts";
import type { Clock } from "./clock.ts";
import type { Params } from "./params.ts";
import type { OutputSubscriber, ProcessExit, ProcessTable } from "./processes.ts";
import type { Limits, Method } from "./wire.ts";

/** The methods with a handler: all but `$/cancel`, which the session answers itself. */
export type HandledMethod = Exclude<Method, "$/cancel">;

/** Size limits of a server (defaults: {@linkcode Limits}). */
export type ServerLimits = { -readonly [K in keyof typeof Limits]: number };

/** The server, as a handler sees it. */
export interface HandlerServer {
  /** The running sandbox the methods act on. */
  readonly backend: ControlBackend;
  /** Processes, shared by all sessions. */
  readonly processes: ProcessTable;
  /** Effective limits. */
  readonly limits: ServerLimits;
  /** Time source. */
  readonly clock: Clock;
  /** Name and version reported by `initialize`. */
  readonly serverInfo: { name: string; version: string };
  /** A new watch id, unique in the server. */
  nextWatchId(): string;
  /** Marks shutdown as requested and asks the backend to stop. */
  requestShutdown(): Promise<void>;
}

/** The session (one client), as a handler sees it. */
export interface HandlerSession {
  /** The server the session belongs to. */
  readonly server: HandlerServer;
  /** Its watches by id. */
  readonly watches: Map<string, BackendWatch>;
  /** Receives `output` and `exit` notifications of the processes it follows. */
  readonly subscriber: OutputSubscriber;
  /** Asks for a shutdown when this client disconnects (`initialize {stop_on_close}`). */
  setStopOnClose(on: boolean): void;
  /** Queues a notification. */
  notify(method: string, params: Record<string, unknown>): void;
  /** Resolves when the client's queue has room. */
  ready(): Promise<void>;
}

/** What a handler gets besides its params. */
export interface RequestContext {
  /** Aborted by `$/cancel` or when the connection closes. */
  signal: AbortSignal;
}

/** What a handler returns: the result, and an action to run right after the reply is queued. */
export interface HandlerResult {
  /** The JSON-RPC result. */
  result: unknown;
  /** Runs once the reply is queued (subscribing to output in the same turn as a snapshot). */
  afterReply?: () => void;
}

/** Serves one method. */
export type Handler = (
  session: HandlerSession,
  p: Params,
  ctx: RequestContext,
) => Promise<HandlerResult>;

/** The params of an `exit` notification (and of `wait`'s result). */
export function exitParams(pid: string, exit: ProcessExit): Record<string, unknown> {
  const out: Record<string, unknown> = { pid, code: exit.code, signal: exit.signal };
  if (exit.error) out.error = exit.error;
  return out;
}

/** Rejects with the signal's reason when it aborts (for racing a backend call). */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
