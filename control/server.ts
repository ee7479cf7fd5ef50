/**
 * The control server: one {@linkcode ControlServer} per sandbox, one {@linkcode ControlSession}
 * per connected client (control socket connection, or stdin/stdout for `--stdio`).
 *
 * Every request runs as its own task, so a long `exec` never delays `kill` or `input`. Each
 * in-flight request is one record in one map (id → method, abort controller, start time); it is
 * removed in one place when the request settles, and `$/cancel` or a closed connection aborts it.
 * Time comes from the {@linkcode Clock} passed in.
 *
 * @module
 */

import { concatBytes } from "../io/mod.ts";
import { NAME_LIMITS, nameProblem } from "../host/mod.ts";
import type { BackendWatch, ControlBackend } from "./backend.ts";
import { type Clock, realClock } from "./clock.ts";
import { LineConnection } from "./connection.ts";
import { invalidParams, RpcError, type RpcErrorObject, serverError, toRpcError } from "./errors.ts";
import { Params } from "./params.ts";
import {
  type OutputSubscriber,
  type ProcessExit,
  type ProcessRecord,
  ProcessTable,
} from "./processes.ts";
import type { OutputChunk } from "./ring.ts";
import { parseSignal, signalName } from "../proto/mod.ts";
import {
  CONTROL_PROTOCOL_VERSION,
  KILL_SIGNALS,
  Limits,
  METHODS,
  NOTIFICATIONS,
  RpcErrorCode,
} from "./wire.ts";

/** A JSON-RPC id. */
export type RpcId = string | number | null;

/** Size limits of a server (defaults: {@linkcode Limits}). */
export type ServerLimits = { -readonly [K in keyof typeof Limits]: number };

/** Options of {@linkcode ControlServer}. */
export interface ControlServerOptions {
  /** Time source (default: the real clock). */
  clock?: Clock;
  /** Overrides of {@linkcode Limits}. */
  limits?: Partial<ServerLimits>;
  /** Name and version reported by `initialize`. */
  serverInfo?: { name: string; version: string };
  /** Called with one line per notable event (protocol errors, session ends). */
  log?: (line: string) => void;
}

/** What a handler returns: the result, and an action to run right after the reply is queued. */
interface HandlerResult {
  result: unknown;
  afterReply?: () => void;
}

/** What a handler gets besides its params. */
interface RequestContext {
  /** Aborted by `$/cancel` or when the connection closes. */
  signal: AbortSignal;
}

type Handler = (session: ControlSession, p: Params, ctx: RequestContext) => Promise<HandlerResult>;

/** One in-flight request: everything about it in one record. */
interface InFlight {
  id: RpcId;
  method: string;
  abort: AbortController;
  startedAt: number;
}

/** Serves the control protocol for one sandbox to any number of clients. */
export class ControlServer {
  /** The sandbox. */
  readonly backend: ControlBackend;
  /** Processes, shared by all sessions. */
  readonly processes: ProcessTable;
  /** Effective limits. */
  readonly limits: ServerLimits;
  /** Time source. */
  readonly clock: Clock;
  readonly #sessions = new Set<ControlSession>();
  readonly #serverInfo: { name: string; version: string };
  readonly #log: (line: string) => void;
  #watchCounter = 0;
  #shutdownRequested = false;
  readonly #shutdown: Promise<void>;
  #resolveShutdown!: () => void;

  constructor(backend: ControlBackend, options: ControlServerOptions = {}) {
    this.backend = backend;
    this.clock = options.clock ?? realClock;
    this.limits = { ...Limits, ...options.limits };
    this.#serverInfo = options.serverInfo ?? { name: "shuru", version: "0" };
    this.#log = options.log ?? (() => {});
    this.processes = new ProcessTable(backend, {
      ringBytes: this.limits.RING_BYTES,
      maxExited: this.limits.MAX_EXITED_PROCESSES,
      maxExitedBytes: this.limits.MAX_EXITED_OUTPUT_BYTES,
      maxLive: this.limits.MAX_LIVE_PROCESSES,
      clock: this.clock,
    });
    this.#shutdown = new Promise((r) => (this.#resolveShutdown = r));
  }

  /** Resolves when a client asked for `shutdown` (or a `stop_on_close` owner disconnected). */
  get shutdownRequested(): Promise<void> {
    return this.#shutdown;
  }

  /** Sessions currently connected. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Per-session figures (outgoing bytes queued, requests in flight), for logs and tests. */
  sessionStats(): Array<{ queuedBytes: number; inFlight: number; watches: number }> {
    return [...this.#sessions].map((s) => s.stats());
  }

  /** @internal */
  nextWatchId(): string {
    return `w${++this.#watchCounter}`;
  }

  /** @internal */
  log(line: string): void {
    this.#log(line);
  }

  /** @internal */
  serverInfo(): { name: string; version: string } {
    return this.#serverInfo;
  }

  /** @internal Marks shutdown as requested and asks the backend to stop. */
  async requestShutdown(): Promise<void> {
    if (this.#shutdownRequested) return;
    this.#shutdownRequested = true;
    try {
      await this.backend.shutdown?.();
    } finally {
      this.#resolveShutdown();
    }
  }

  /**
   * Serves one client over a byte-stream pair; returns its session (await `session.done`).
   * Sends the `ready` notification first, as the reference does.
   */
  serve(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
  ): ControlSession {
    const conn = new LineConnection(readable, writable, {
      maxLineBytes: this.limits.MAX_LINE_BYTES,
      maxQueuedBytes: this.limits.CLIENT_QUEUE_BYTES,
    });
    const session = new ControlSession(this, conn);
    this.#sessions.add(session);
    void session.done.then(() => this.#sessions.delete(session));
    return session;
  }

  /** Closes every session and kills every process. */
  async close(): Promise<void> {
    await Promise.all([...this.#sessions].map((s) => s.close()));
    await this.processes.killAll();
  }
}

/** One connected client. */
export class ControlSession implements OutputSubscriber {
  readonly #server: ControlServer;
  readonly #conn: LineConnection;
  readonly #inFlight = new Map<string, InFlight>();
  readonly #watches = new Map<string, BackendWatch>();
  #stopOnClose = false;
  /** Resolves when the client has gone and everything of this session is cleaned up. */
  readonly done: Promise<void>;

  constructor(server: ControlServer, conn: LineConnection) {
    this.#server = server;
    this.#conn = conn;
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

  /** @internal */
  get server(): ControlServer {
    return this.#server;
  }

  /** @internal */
  get watches(): Map<string, BackendWatch> {
    return this.#watches;
  }

  /** @internal */
  setStopOnClose(on: boolean): void {
    this.#stopOnClose = on;
  }

  /** Queues a notification. */
  notify(method: string, params: Record<string, unknown>): void {
    this.#conn.send({ jsonrpc: "2.0", method, params });
  }

  /** OutputSubscriber: sends an `output` notification. */
  onOutput(pid: string, chunk: OutputChunk): void {
    this.notify("output", {
      pid,
      stream: chunk.stream,
      data: chunk.data,
      seq: chunk.seq,
    });
  }

  /** OutputSubscriber: sends an `exit` notification. */
  onExit(pid: string, exit: ProcessExit): void {
    this.notify("exit", exitParams(pid, exit));
  }

  /** OutputSubscriber: resolves when this client's queue has room. */
  ready(): Promise<void> {
    return this.#conn.ready();
  }

  /** Disconnects this client. */
  async close(): Promise<void> {
    await this.#conn.close();
    await this.done;
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
      this.#server.processes.unsubscribeAll(this);
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
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      this.#sendError(
        null,
        new RpcError(
          RpcErrorCode.PARSE_ERROR,
          "EINVAL",
          `Cannot parse the message: ${err instanceof Error ? err.message : err}`,
        ),
      );
      return;
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
      this.#sendError(
        null,
        new RpcError(
          RpcErrorCode.INVALID_REQUEST,
          "EINVAL",
          "Cannot handle the message: expected one JSON-RPC request object (batches are not supported)",
        ),
      );
      return;
    }
    const m = msg as Record<string, unknown>;
    const hasId = "id" in m;
    const id = m.id;
    if (hasId && !(typeof id === "string" || typeof id === "number" || id === null)) {
      this.#sendError(
        null,
        new RpcError(RpcErrorCode.INVALID_REQUEST, "EINVAL", "Cannot handle the message: bad id"),
      );
      return;
    }
    const rid = (hasId ? id : null) as RpcId;
    if (typeof m.method !== "string") {
      // A response from the client: we never send requests, so there is nothing to match.
      if ("result" in m || "error" in m) return;
      this.#sendError(
        rid,
        new RpcError(
          RpcErrorCode.INVALID_REQUEST,
          "EINVAL",
          "Cannot handle the message: no method",
        ),
      );
      return;
    }
    if (m.jsonrpc !== "2.0") {
      if (hasId) {
        this.#sendError(
          rid,
          new RpcError(
            RpcErrorCode.INVALID_REQUEST,
            "EINVAL",
            'Cannot handle the message: "jsonrpc" must be "2.0"',
          ),
        );
      }
      return;
    }
    const method = m.method;
    if (method === "$/cancel") {
      this.#cancel(m.params);
      if (hasId) this.#sendResult(rid, {});
      return;
    }
    const handler = HANDLERS[method];
    if (!handler) {
      if (hasId) {
        this.#sendError(
          rid,
          new RpcError(
            RpcErrorCode.METHOD_NOT_FOUND,
            "UNSUPPORTED",
            `Cannot call ${method}: no such method`,
          ),
        );
      }
      return;
    }
    if (!hasId) {
      // A notification (the reference sends `input` this way): run it, never answer.
      return this.#run(null, method, m.params, handler, false);
    }
    const key = idKey(rid);
    if (this.#inFlight.has(key)) {
      this.#sendError(
        rid,
        new RpcError(
          RpcErrorCode.INVALID_REQUEST,
          "EINVAL",
          `Cannot handle request ${JSON.stringify(rid)}: a request with this id is still running`,
        ),
      );
      return;
    }
    return this.#run(rid, method, m.params, handler, true);
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
      const { result, afterReply } = await handler(this, params, { signal: record.abort.signal });
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

function exitParams(pid: string, exit: ProcessExit): Record<string, unknown> {
  const out: Record<string, unknown> = { pid, code: exit.code, signal: exit.signal };
  if (exit.error) out.error = exit.error;
  return out;
}

/** Rejects with the signal's reason when it aborts (for racing a backend call). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
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

function spawnOptions(p: Params): {
  env?: Record<string, string>;
  cwd?: string;
  tty?: { rows: number; cols: number };
} {
  const out: { env?: Record<string, string>; cwd?: string; tty?: { rows: number; cols: number } } =
    {};
  const env = p.optStringMap("env", { maxEntries: 4096 });
  if (env) out.env = env;
  const cwd = p.optString("cwd", { maxLength: 4096 });
  if (cwd) out.cwd = cwd;
  if (p.bool("tty", false)) {
    out.tty = {
      rows: p.optInt("rows", { min: 1, max: 1000 }) ?? 24,
      cols: p.optInt("cols", { min: 1, max: 1000 }) ?? 80,
    };
  }
  return out;
}

function signalParam(p: Params, fallback: string): string {
  const raw = p.raw("signal");
  if (raw === undefined || raw === null) return fallback;
  if (typeof raw !== "number" && typeof raw !== "string") {
    throw invalidParams(`Cannot call kill: "signal" must be a name`);
  }
  let name: string;
  try {
    name = signalName(parseSignal(raw));
  } catch {
    name = String(raw);
  }
  if (!(KILL_SIGNALS as readonly string[]).includes(name)) {
    throw invalidParams(
      typeof raw === "number"
        ? `Cannot call kill: signal ${raw} is not supported`
        : `Cannot call kill: signal ${raw} is not one of ${KILL_SIGNALS.join(", ")}`,
    );
  }
  return name;
}

const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();

/** Collects one stream of an exec up to a byte cap. */
class Collector {
  #parts: Uint8Array[] = [];
  #bytes = 0;
  truncated = false;
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  add(data: Uint8Array): void {
    const room = this.#max - this.#bytes;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = data.length > room ? data.subarray(0, room) : data;
    if (part.length < data.length) this.truncated = true;
    this.#parts.push(part.slice());
    this.#bytes += part.length;
  }
  bytes(): Uint8Array {
    return concatBytes(this.#parts);
  }
}

function processInfo(rec: ProcessRecord): Record<string, unknown> {
  return {
    pid: rec.pid,
    argv: rec.argv,
    kind: rec.kind,
    state: rec.exit ? "exited" : "running",
    started_at: rec.startedAt,
    ended_at: rec.endedAt,
    exit_code: rec.exit?.code ?? null,
    signal: rec.exit?.signal ?? null,
    next_seq: rec.ring.nextSeq,
  };
}

const HANDLERS: Record<string, Handler> = {
  initialize(session, p) {
    session.setStopOnClose(p.bool("stop_on_close", false));
    const server = session.server;
    return Promise.resolve({
      result: {
        protocol_version: CONTROL_PROTOCOL_VERSION,
        server: server.serverInfo(),
        capabilities: {
          methods: [...METHODS],
          notifications: [...NOTIFICATIONS],
          checkpoint: typeof server.backend.checkpoint === "function",
          shutdown: typeof server.backend.shutdown === "function",
          limits: {
            max_line_bytes: server.limits.MAX_LINE_BYTES,
            max_chunk_bytes: server.limits.MAX_CHUNK_BYTES,
            max_whole_file_bytes: server.limits.MAX_WHOLE_FILE_BYTES,
            ring_bytes: server.limits.RING_BYTES,
            max_output_bytes: server.limits.MAX_OUTPUT_BYTES,
            default_exec_timeout_ms: server.limits.DEFAULT_EXEC_TIMEOUT_MS,
          },
        },
        sandbox: server.backend.info?.() ?? {},
      },
    });
  },

  async exec(session, p, ctx) {
    const server = session.server;
    const argv = p.stringArray("argv", { minLength: 1, maxLength: 4096 });
    const options = spawnOptions(p);
    const timeoutMs = p.optInt("timeout_ms", { min: 1, max: 7 * 24 * 3600 * 1000 }) ??
      server.limits.DEFAULT_EXEC_TIMEOUT_MS;
    const maxOutput =
      p.optInt("max_output_bytes", { min: 0, max: server.limits.MAX_OUTPUT_BYTES }) ??
        server.limits.DEFAULT_MAX_OUTPUT_BYTES;
    const encoding = p.optEnum("encoding", ["utf8", "base64"] as const) ?? "utf8";
    let stdin = p.optBase64("stdin_base64", { maxBytes: server.limits.MAX_LINE_BYTES });
    const stdinText = p.optString("stdin");
    if (stdinText !== undefined) stdin = utf8Encoder.encode(stdinText);

    const hasStdin = stdin !== undefined && stdin.length > 0;
    const rec = await server.processes.start(argv, { ...options, stdin: hasStdin }, "exec");
    const out = new Collector(maxOutput);
    const err = new Collector(maxOutput);
    rec.listeners.add((c) => (c.stream === "stdout" ? out : err).add(c.data));
    rec.begin(server.processes.retire);

    let timedOut = false;
    let cancelled: unknown = null;
    const finished = new AbortController();
    const onAbort = () => {
      cancelled = ctx.signal.reason;
      void rec.process.kill("SIGKILL").catch(() => {});
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    server.clock.sleep(timeoutMs, finished.signal).then(
      () => {
        timedOut = true;
        void rec.process.kill("SIGKILL").catch(() => {});
      },
      () => {},
    );
    if (hasStdin) {
      void (async () => {
        try {
          await rec.process.write(stdin!);
          await rec.process.closeStdin();
        } catch {
          // The process may exit without reading its stdin.
        }
      })();
    }
    let exit: ProcessExit;
    try {
      exit = await rec.done;
    } finally {
      finished.abort();
      ctx.signal.removeEventListener("abort", onAbort);
    }
    if (cancelled) throw cancelled;
    if (exit.error) {
      throw serverError("SANDBOX_GONE", `Cannot finish ${argv[0]}: ${exit.error}`);
    }
    const outBytes = out.bytes();
    const errBytes = err.bytes();
    const result: Record<string, unknown> = {
      stdout: encoding === "base64" ? outBytes : utf8.decode(outBytes),
      stderr: encoding === "base64" ? errBytes : utf8.decode(errBytes),
      exit_code: exit.code,
      signal: exit.signal,
      timed_out: timedOut,
      pid: rec.pid,
      duration_ms: (rec.endedAt ?? server.clock.now()) - rec.startedAt,
    };
    if (out.truncated || err.truncated) {
      result.truncated = { stdout: out.truncated, stderr: err.truncated };
    }
    return { result };
  },

  async spawn(session, p) {
    const server = session.server;
    const argv = p.stringArray("argv", { minLength: 1, maxLength: 4096 });
    const rec = await server.processes.start(argv, spawnOptions(p), "spawn");
    rec.subscribers.add(session);
    return {
      result: { pid: rec.pid },
      afterReply: () => rec.begin(server.processes.retire),
    };
  },

  async input(session, p, ctx) {
    const pid = p.string("pid", { maxLength: 64 });
    const data = p.optBase64("data", { maxBytes: session.server.limits.MAX_CHUNK_BYTES * 2 });
    const rec = session.server.processes.getRunning(pid, "write to");
    try {
      // A process that never reads its stdin must not pin this request (or the session's
      // cleanup) forever: cancellation and disconnects abort the wait.
      if (data && data.length > 0) await abortable(rec.process.write(data), ctx.signal);
      if (p.bool("eof", false)) await abortable(rec.process.closeStdin(), ctx.signal);
    } catch (err) {
      throw toRpcError(err, `write to process ${pid}`);
    }
    return { result: {} };
  },

  async close_stdin(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    const rec = session.server.processes.getRunning(pid, "close stdin of");
    await rec.process.closeStdin().catch((err) => {
      throw toRpcError(err, `close stdin of process ${pid}`);
    });
    return { result: {} };
  },

  async kill(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    const signal = signalParam(p, "SIGKILL");
    const rec = session.server.processes.getRunning(pid, "kill");
    await rec.process.kill(signal).catch((err) => {
      throw toRpcError(err, `kill process ${pid}`);
    });
    return { result: {} };
  },

  async resize(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    const rows = p.int("rows", { min: 1, max: 1000 });
    const cols = p.int("cols", { min: 1, max: 1000 });
    const rec = session.server.processes.getRunning(pid, "resize");
    if (!rec.process.resize) {
      throw serverError("UNSUPPORTED", `Cannot resize process ${pid}: it has no terminal`);
    }
    await rec.process.resize(rows, cols).catch((err) => {
      throw toRpcError(err, `resize process ${pid}`);
    });
    return { result: {} };
  },

  async wait(session, p, ctx) {
    const pid = p.string("pid", { maxLength: 64 });
    const rec = session.server.processes.get(pid);
    const exit = await abortable(rec.done, ctx.signal);
    return { result: exitParams(pid, exit) };
  },

  ps(session) {
    return Promise.resolve({
      result: { processes: session.server.processes.list().map(processInfo) },
    });
  },

  attach(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    const since = p.optInt("since_seq", { min: 0 }) ?? 0;
    const follow = p.bool("follow", true);
    const rec = session.server.processes.get(pid);
    const replay = rec.ring.since(since);
    const exited = rec.exit;
    return Promise.resolve({
      result: {
        pid,
        chunks: replay.chunks.map((c) => ({
          seq: c.seq,
          stream: c.stream,
          data: c.data,
        })),
        truncated: replay.truncated,
        next_seq: replay.nextSeq,
        exited: exited ? exitParams(pid, exited) : null,
      },
      // Subscribing in the same turn as the snapshot: no chunk is missed or sent twice.
      afterReply: () => {
        if (follow && !rec.exit) rec.subscribers.add(session);
      },
    });
  },

  detach(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    session.server.processes.get(pid).subscribers.delete(session);
    return Promise.resolve({ result: {} });
  },

  async watch(session, p) {
    const path = p.path("path");
    const recursive = p.bool("recursive", true);
    if (session.watches.size >= session.server.limits.MAX_WATCHES) {
      throw serverError(
        "TOO_MANY",
        `Cannot watch ${path}: this connection has ${session.watches.size} watches (the limit)`,
      );
    }
    let watch: BackendWatch;
    try {
      watch = await session.server.backend.watch(path, { recursive });
    } catch (err) {
      throw toRpcError(err, `watch ${path}`);
    }
    const watchId = session.server.nextWatchId();
    session.watches.set(watchId, watch);
    return {
      result: { watch_id: watchId },
      afterReply: () => {
        void (async () => {
          try {
            for await (const ev of watch) {
              session.notify("file_change", { path: ev.path, event: ev.event, watch_id: watchId });
              await session.ready();
            }
          } catch {
            // The watch ended with the agent connection.
          }
          session.watches.delete(watchId);
        })();
      },
    };
  },

  async unwatch(session, p) {
    const watchId = p.string("watch_id", { maxLength: 64 });
    const watch = session.watches.get(watchId);
    if (!watch) throw serverError("NO_SUCH_WATCH", `Cannot unwatch ${watchId}: no such watch`);
    session.watches.delete(watchId);
    await watch.close();
    return { result: {} };
  },

  async read_file(session, p, ctx) {
    const limits = session.server.limits;
    const path = p.path("path");
    const offset = p.optInt("offset", { min: 0 }) ?? 0;
    const length = p.optInt("length", { min: 0, max: limits.MAX_CHUNK_BYTES });
    const want = length ?? limits.MAX_WHOLE_FILE_BYTES + 1;
    let data: Uint8Array;
    try {
      data = await abortable(
        session.server.backend.readFile(path, { offset, length: want }),
        ctx.signal,
      );
    } catch (err) {
      throw toRpcError(err, `read ${path}`);
    }
    if (length === undefined && data.length > limits.MAX_WHOLE_FILE_BYTES) {
      throw serverError(
        "EFBIG",
        `Cannot read ${path} in one message: it is larger than ${limits.MAX_WHOLE_FILE_BYTES} bytes; ` +
          `read it in chunks with offset and length`,
      );
    }
    return {
      result: {
        content: data,
        offset,
        bytes: data.length,
        eof: data.length < want,
      },
    };
  },

  async write_file(session, p, ctx) {
    const limits = session.server.limits;
    const path = p.path("path");
    const hasOffset = p.has("offset");
    const offset = p.optInt("offset", { min: 0 }) ?? 0;
    // Without offset the whole file is replaced, as in the reference; chunks are capped.
    const maxBytes = hasOffset ? limits.MAX_CHUNK_BYTES : limits.MAX_LINE_BYTES;
    const data = p.base64("content", { maxBytes });
    const truncate = p.bool("truncate", !hasOffset);
    const mode = p.optInt("mode", { min: 0, max: 0o7777 });
    try {
      await abortable(
        session.server.backend.writeFile(path, data, {
          offset,
          truncate,
          ...(mode !== undefined ? { mode } : {}),
        }),
        ctx.signal,
      );
    } catch (err) {
      throw toRpcError(err, `write ${path}`);
    }
    return { result: { bytes: data.length } };
  },

  async mkdir(session, p) {
    const path = p.path("path");
    const mode = p.optInt("mode", { min: 0, max: 0o7777 });
    await session.server.backend
      .mkdir(path, {
        recursive: p.bool("recursive", true),
        ...(mode !== undefined ? { mode } : {}),
      })
      .catch((err) => {
        throw toRpcError(err, `create directory ${path}`);
      });
    return { result: {} };
  },

  async read_dir(session, p) {
    const path = p.path("path");
    const entries = await session.server.backend.readDir(path).catch((err) => {
      throw toRpcError(err, `list ${path}`);
    });
    const max = session.server.limits.MAX_DIR_ENTRIES;
    return {
      result: {
        entries: entries.slice(0, max).map((e) => ({ name: e.name, type: e.type, size: e.size })),
        truncated: entries.length > max,
      },
    };
  },

  async stat(session, p) {
    const path = p.path("path");
    const s = await session.server.backend.stat(path, { lstat: p.bool("lstat", false) }).catch(
      (err) => {
        throw toRpcError(err, `stat ${path}`);
      },
    );
    return {
      result: {
        size: s.size,
        mode: s.mode,
        mtime: Math.floor(s.mtimeMs / 1000),
        mtime_ms: s.mtimeMs,
        is_dir: s.isDir,
        is_file: s.isFile,
        is_symlink: s.isSymlink,
      },
    };
  },

  async remove(session, p) {
    const path = p.path("path");
    await session.server.backend.remove(path, { recursive: p.bool("recursive", false) }).catch(
      (err) => {
        throw toRpcError(err, `remove ${path}`);
      },
    );
    return { result: {} };
  },

  async rename(session, p) {
    const oldPath = p.path("old_path");
    const newPath = p.path("new_path");
    await session.server.backend.rename(oldPath, newPath).catch((err) => {
      throw toRpcError(err, `rename ${oldPath}`);
    });
    return { result: {} };
  },

  async copy(session, p) {
    const src = p.path("src");
    const dst = p.path("dst");
    await session.server.backend.copy(src, dst, { recursive: p.bool("recursive", false) }).catch(
      (err) => {
        throw toRpcError(err, `copy ${src}`);
      },
    );
    return { result: {} };
  },

  async chmod(session, p) {
    const path = p.path("path");
    const mode = p.int("mode", { min: 0, max: 0o7777 });
    await session.server.backend.chmod(path, mode).catch((err) => {
      throw toRpcError(err, `chmod ${path}`);
    });
    return { result: {} };
  },

  async checkpoint(session, p) {
    const name = p.string("name", { maxLength: NAME_LIMITS.checkpoint });
    const problem = nameProblem("checkpoint", name);
    if (problem) throw invalidParams(problem);
    const backend = session.server.backend;
    if (!backend.checkpoint) {
      throw serverError(
        "UNSUPPORTED",
        `Cannot save checkpoint ${name}: this sandbox has no disk to save (a bare agent)`,
      );
    }
    const r = await backend.checkpoint(name).catch((err) => {
      throw toRpcError(err, `save checkpoint ${name}`);
    });
    return {
      result: {
        name,
        pause_ms: Math.round(r.pauseMs * 10) / 10,
        total_ms: Math.round(r.totalMs),
        hashed_blocks: r.saved.hashedBlocks,
        new_chunks: r.saved.newChunks,
        new_bytes: r.saved.newBytes,
        used_blocks: r.saved.usedBlocks,
      },
    };
  },

  shutdown(session) {
    const server = session.server;
    if (!server.backend.shutdown) {
      throw serverError("UNSUPPORTED", "Cannot shut down: this server does not own the sandbox");
    }
    return Promise.resolve({
      result: {},
      afterReply: () => void server.requestShutdown().catch(() => {}),
    });
  },
};
