/**
 * One connected client of the control server: reads its lines, checks each envelope
 * (envelope.ts), runs each request as its own task through the handlers (handlers.ts), and
 * answers in order of completion. Each in-flight request is one record in one map (id → method,
 * abort controller, start time), removed in one place when the request settles; `$/cancel` or
 * a closed connection aborts it.
 *
 * @module
 */

import type { BackendWatch } from "./backend.ts";
import type { LineConnection } from "./connection.ts";
import { readEnvelope, type RpcId } from "./envelope.ts";
import { RpcError, type RpcErrorObject, serverError, toRpcError } from "./errors.ts";
import { exitParams, type Handler, type HandlerServer, type HandlerSession } from "./handler.ts";
import { handlerOf } from "./handlers.ts";
import { Params } from "./params.ts";
import type { OutputSubscriber } from "./processes.ts";
import { RpcErrorCode } from "./wire.ts";

/** One in-flight request: everything about it in one record. */
interface InFlight {
  id: RpcId;
  method: string;
  abort: AbortController;
  startedAt: number;
}

/** What a session needs of its server besides what handlers see. */
export interface SessionServer extends HandlerServer {
  /** Writes one line to the server's log. */
  log(line: string): void;
}

/** One connected client. */
export class ControlSession {
  readonly #server: SessionServer;
  readonly #conn: LineConnection;
  readonly #inFlight = new Map<string, InFlight>();
  readonly #watches = new Map<string, BackendWatch>();
  #stopOnClose = false;
  /** What this session's handlers see of it. */
  readonly #view: HandlerSession;
  /** Resolves when the client has gone and everything of this session is cleaned up. */
  readonly done: Promise<void>;

  constructor(server: SessionServer, conn: LineConnection) {
    this.#server = server;
    this.#conn = conn;
    const subscriber: OutputSubscriber = {
      onOutput: (pid, chunk) =>
        this.#notify("output", { pid, stream: chunk.stream, data: chunk.data, seq: chunk.seq }),
      onExit: (pid, exit) => this.#notify("exit", exitParams(pid, exit)),
      ready: () => conn.ready(),
    };
    this.#view = {
      server,
      watches: this.#watches,
      subscriber,
      setStopOnClose: (on) => (this.#stopOnClose = on),
      notify: (method, params) => this.#notify(method, params),
      ready: () => conn.ready(),
    };
    conn.send({ jsonrpc: "2.0", method: "ready" });
    this.done = this.#readLoop();
  }

  /** Requests being served now. */
  get inFlightCount(): number {
    return this.#inFlight.size;
  }

  /** Outgoing bytes queued, requests in flight and watches of this session. */
  stats(): { queuedBytes: number; inFlight: number; watches: number } {
    return {
      queuedBytes: this.#conn.queuedBytes,
      inFlight: this.#inFlight.size,
      watches: this.#watches.size,
    };
  }

  /** Disconnects this client. */
  async close(): Promise<void> {
    await this.#conn.close();
    await this.done;
  }

  #notify(method: string, params: Record<string, unknown>): void {
    this.#conn.send({ jsonrpc: "2.0", method, params });
  }

  async #readLoop(): Promise<void> {
    const tasks = new Set<Promise<void>>();
    try {
      for await (const line of this.#conn.lines()) {
        if (line.kind === "too_long") {
          this.#server.log(`control: dropped a ${line.bytes}-byte line (too long)`);
          this.#sendError(
            null,
            new RpcError(
              RpcErrorCode.PARSE_ERROR,
              "LINE_TOO_LONG",
              `Cannot read a message of ${line.bytes} bytes: the limit is ` +
                `${this.#server.limits.MAX_LINE_BYTES}; send files in chunks`,
            ),
          );
          continue;
        }
        const task = this.#handleLine(line.text);
        if (task) {
          tasks.add(task);
          void task.finally(() => tasks.delete(task));
        }
      }
    } catch (err) {
      this.#server.log(`control: session read failed: ${err instanceof Error ? err.message : err}`);
    } finally {
      // Cleanup in one place: abort requests, close watches, stop receiving output.
      for (const f of this.#inFlight.values()) {
        f.abort.abort(
          serverError("CANCELLED", "Cannot finish the request: the client disconnected"),
        );
      }
      this.#server.processes.unsubscribeAll(this.#view.subscriber);
      await Promise.allSettled([...tasks]);
      await Promise.allSettled([...this.#watches.values()].map((w) => w.close()));
      this.#watches.clear();
      await this.#conn.flushed();
      await this.#conn.close();
      if (this.#stopOnClose) {
        await this.#server.requestShutdown().catch((err) =>
          this.#server.log(`control: shutdown after owner left failed: ${err}`)
        );
      }
    }
  }

  /** Handles one line; returns the task serving it, if any. */
  #handleLine(text: string): Promise<void> | undefined {
    const envelope = readEnvelope(text);
    switch (envelope.kind) {
      case "ignore":
        return;
      case "error":
        this.#sendError(envelope.id, envelope.error);
        return;
      case "cancel":
        this.#cancel(envelope.params);
        if (envelope.id !== undefined) this.#sendResult(envelope.id, {});
        return;
      case "notification": {
        // The reference (the Rust shuru for macOS) sends `input` this way: run it, never answer.
        const handler = handlerOf(envelope.method);
        return handler
          ? this.#run(null, envelope.method, envelope.params, handler, false)
          : undefined;
      }
      case "request": {
        const { id, method } = envelope;
        const handler = handlerOf(method);
        if (!handler) {
          this.#sendError(
            id,
            new RpcError(
              RpcErrorCode.METHOD_NOT_FOUND,
              "UNSUPPORTED",
              `Cannot call ${method}: no such method`,
            ),
          );
          return;
        }
        if (this.#inFlight.has(idKey(id))) {
          this.#sendError(
            id,
            new RpcError(
              RpcErrorCode.INVALID_REQUEST,
              "EINVAL",
              `Cannot handle request ${
                JSON.stringify(id)
              }: a request with this id is still running`,
            ),
          );
          return;
        }
        return this.#run(id, method, envelope.params, handler, true);
      }
    }
  }

  async #run(
    id: RpcId,
    method: string,
    rawParams: unknown,
    handler: Handler,
    reply: boolean,
  ): Promise<void> {
    const record: InFlight = {
      id,
      method,
      abort: new AbortController(),
      startedAt: this.#server.clock.now(),
    };
    const key = reply ? idKey(id) : null;
    if (key !== null) this.#inFlight.set(key, record);
    try {
      const params = new Params(method, rawParams);
      const { result, afterReply } = await handler(this.#view, params, {
        signal: record.abort.signal,
      });
      if (reply) this.#sendResult(id, result);
      afterReply?.();
    } catch (err) {
      const rpc = err instanceof RpcError ? err : toRpcError(err, method);
      if (!(err instanceof RpcError)) {
        this.#server.log(`control: ${method} failed: ${err instanceof Error ? err.stack : err}`);
      }
      if (reply) this.#sendError(id, rpc);
    } finally {
      if (key !== null) this.#inFlight.delete(key);
    }
  }

  #cancel(rawParams: unknown): void {
    const p = rawParams as { id?: unknown } | undefined;
    const id = p?.id;
    if (!(typeof id === "string" || typeof id === "number")) return;
    const record = this.#inFlight.get(idKey(id));
    record?.abort.abort(
      serverError("CANCELLED", `Cannot finish ${record.method}: cancelled by the client`),
    );
  }

  #sendResult(id: RpcId, result: unknown): void {
    this.#conn.send({ jsonrpc: "2.0", id, result });
  }

  #sendError(id: RpcId, err: RpcError): void {
    const error: RpcErrorObject = err.toJSON();
    this.#conn.send({ jsonrpc: "2.0", id, error });
  }
}

function idKey(id: RpcId): string {
  return typeof id === "string" ? `s:${id}` : `n:${id}`;
}
