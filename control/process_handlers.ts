/**
 * The process methods of the control protocol: `exec`, `spawn`, `input`, `close_stdin`, `kill`,
 * `resize`, `wait`, `ps`, `attach`, `detach`.
 *
 * @module
 */

import { concatBytes } from "../io/mod.ts";
import { parseSignal, signalName } from "../proto/mod.ts";
import { invalidParams, serverError, toRpcError } from "./errors.ts";
import { abortable, exitParams, type HandledMethod, type Handler } from "./handler.ts";
import type { Params } from "./params.ts";
import type { ProcessExit, ProcessRecord } from "./processes.ts";
import { KILL_SIGNALS } from "./wire.ts";

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

/** The process methods, by name. */
export const PROCESS_HANDLERS = {
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
    rec.subscribers.add(session.subscriber);
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
    // EOF to a process that has exited is moot (a `tar -x` stops at its end-of-archive, before
    // the writer closes its input): done, not an error.
    if (session.server.processes.get(pid).exit) return { result: {} };
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
        if (follow && !rec.exit) rec.subscribers.add(session.subscriber);
      },
    });
  },

  detach(session, p) {
    const pid = p.string("pid", { maxLength: 64 });
    session.server.processes.get(pid).subscribers.delete(session.subscriber);
    return Promise.resolve({ result: {} });
  },
} satisfies Partial<Record<HandledMethod, Handler>>;
