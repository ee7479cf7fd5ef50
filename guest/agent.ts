/**
 * The guest agent's request handling: one {@link serveConnection} per transport connection, one
 * concurrent handler per stream the host opens. Handlers only move bytes between mux channels
 * (which carry per-channel credit) and OS streams read one chunk at a time, so a stalled reader
 * stalls only its own stream and memory stays bounded by the windows.
 *
 * See docs/agent_protocol.md for the per-operation contract and docs/guest_agent.md for how the
 * agent runs.
 *
 * @module
 */

import {
  AgentError,
  type ConnectionError,
  encodeJsonLine,
  type ExecRequest,
  type ForwardRequest,
  Mux,
  type MuxChannel,
  type MuxStream,
  OPS,
  parseExecMessage,
  parseRequest,
  type Request,
  toWireError,
} from "../proto/mod.ts";
import { poller } from "../ffi/mod.ts";
import * as files from "./files.ts";
import { connectGuestPort } from "./forward.ts";
import { applyIdentity, type IdentityPaths } from "./identity.ts";
import { KeptProcesses } from "./kept.ts";
import { mountShare } from "./mount.ts";
import { applyNetConfig } from "./net.ts";
import { type GuestProcess, ProcessError, startProcess } from "./process.ts";
import { syncAll } from "./shutdown.ts";

/** The agent's software version, announced in HELLO. */
export const AGENT_VERSION = "0.1.0";

/** NDJSON lines are batched into DATA frames of about this size. */
const LINE_BATCH = 32 * 1024;

/** Options for {@link serveConnection}. */
export interface AgentOptions {
  /** Log sink (one line per call). */
  log: (line: string) => void;
  /** Runs after a shutdown request was answered and the connection flushed. */
  onShutdown: () => void | Promise<void>;
  /** Environment processes inherit (request env is laid over it). @default the agent's */
  baseEnv?: Record<string, string>;
  /** Folder for read-only mounts' scratch space. @default "/run/shuru/mounts" */
  mountScratchRoot?: string;
  /**
   * Where set_identity applies (the VM: `{}` for the real kernel files). Absent: the request
   * is refused, so an agent on a host (tests, `--listen`) never sets the host's clock or name.
   */
  identity?: IdentityPaths;
  /** Where kept processes live across sessions. @default one registry per agent process */
  kept?: KeptProcesses;
  /**
   * Stops reading the transport at once (`FdStream.stopReading`): a detach calls it before its
   * last frame, so the next host's bytes stay unread for the next session.
   */
  stopReading?: () => void;
  /** Where net_config applies (the VM). Absent: the request is refused (not the host's NIC). */
  network?: boolean;
}

/** The registry of an agent process, shared by its sessions unless `kept` says otherwise. */
const defaultKept = new KeptProcesses();

/**
 * Runs one protocol session over `transport` until it ends. Resolves with the connection error
 * that ended it (garbage, truncation, peer gone), or undefined after a clean close.
 */
export async function serveConnection(
  transport: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> },
  options: AgentOptions,
): Promise<ConnectionError | undefined> {
  const mux = await Mux.connect(transport, {
    role: "guest",
    version: AGENT_VERSION,
    capabilities: [...OPS],
    sleep: (ms, signal) => poller.sleep(ms, signal),
  });
  const session = new Session(mux, options);
  for await (const stream of mux) {
    // Never awaited here: every request runs concurrently.
    void session.handle(stream);
  }
  return await mux.closed;
}

/** State shared by the handlers of one connection. */
class Session {
  readonly mux: Mux;
  readonly options: AgentOptions;
  readonly kept: KeptProcesses;

  constructor(mux: Mux, options: AgentOptions) {
    this.mux = mux;
    this.options = options;
    this.kept = options.kept ?? defaultKept;
  }

  async handle(stream: MuxStream): Promise<void> {
    let request: Request;
    try {
      request = parseRequest(stream.request);
    } catch (e) {
      this.options.log(`rejected stream ${stream.id}: ${(e as Error).message}`);
      stream.reset(toWireError(e));
      return;
    }
    try {
      await this.dispatch(stream, request);
    } catch (e) {
      if (!stream.finished) {
        stream.reset(toWireError(e, `Cannot ${request.op}`));
      } else if (!stream.signal.aborted) {
        this.options.log(`${request.op} on stream ${stream.id} failed late: ${e}`);
      }
    }
  }

  async dispatch(stream: MuxStream, req: Request): Promise<void> {
    switch (req.op) {
      case "exec":
        return await this.exec(stream, req);
      case "read_file": {
        const file = await files.readFile(req.path, {
          ...(req.offset === undefined ? {} : { offset: req.offset }),
          ...(req.length === undefined ? {} : { length: req.length }),
        });
        await file.readable.pipeTo(stream.channel(0).writable);
        return await stream.close({ size: file.bytesRead() });
      }
      case "write_file": {
        const size = await files.writeFile(req.path, stream.channel(0).readable, {
          ...(req.mode === undefined ? {} : { mode: req.mode }),
          ...(req.append === undefined ? {} : { append: req.append }),
          ...(req.createNew === undefined ? {} : { createNew: req.createNew }),
          ...(req.offset === undefined ? {} : { offset: req.offset }),
        });
        return await stream.close({ size });
      }
      case "mkdir":
        await files.mkdir(req.path, {
          ...(req.recursive === undefined ? {} : { recursive: req.recursive }),
          ...(req.mode === undefined ? {} : { mode: req.mode }),
        });
        return await stream.close({});
      case "read_dir": {
        const count = await writeLines(stream.channel(0), files.readDir(req.path));
        return await stream.close({ count });
      }
      case "stat":
        return await stream.close({ ...await files.stat(req.path, { lstat: req.lstat ?? false }) });
      case "remove":
        await files.remove(req.path, { recursive: req.recursive ?? false });
        return await stream.close({});
      case "rename":
        await files.rename(req.from, req.to);
        return await stream.close({});
      case "copy":
        await files.copy(req.from, req.to, { recursive: req.recursive ?? false });
        return await stream.close({});
      case "chmod":
        await files.chmod(req.path, req.mode);
        return await stream.close({});
      case "watch": {
        const watching = files.watch(req.path, {
          recursive: req.recursive ?? true,
          signal: stream.signal,
        });
        // Tells the host that changes from now on are seen (a bare stream could not say so).
        void stream.send({ type: "watching" }).catch(() => {});
        // Runs until the host resets the stream (which aborts stream.signal).
        await writeLines(stream.channel(0), watching.events, { flushEach: true });
        return;
      }
      case "forward":
        return await this.forward(stream, req);
      case "mount":
        mountShare(req.tag, req.path, {
          mode: req.mode,
          ...(req.transport ? { transport: req.transport } : {}),
          ...(this.options.mountScratchRoot === undefined
            ? {}
            : { scratchRoot: this.options.mountScratchRoot }),
        });
        return await stream.close({});
      case "set_identity": {
        if (!this.options.identity) {
          throw new AgentError(
            "unsupported",
            "Cannot set_identity: this agent does not run in a VM (it would change the host)",
          );
        }
        return await stream.close({ ...applyIdentity(req, this.options.identity) });
      }
      case "processes":
        return await stream.close({ processes: this.kept.list().map((kp) => kp.info()) });
      case "attach": {
        const kp = this.kept.get(req.id);
        if (!kp) {
          throw new AgentError("not_found", `Cannot attach to process ${req.id}: not kept here`);
        }
        return await kp.attach(stream, [req.stdout ?? 0, req.stderr ?? 0], this.options.log);
      }
      case "detach":
        // Nothing is read after the request (the host sends nothing more) and nothing written
        // after the CLOSE: a snapshot taken now has an agent waiting for its next host.
        this.options.stopReading?.();
        return await this.mux.closeAfter(stream, { kept: this.kept.running });
      case "net_config":
        if (!this.options.network) {
          throw new AgentError(
            "unsupported",
            "Cannot net_config: this agent does not run in a VM (it would change the host)",
          );
        }
        applyNetConfig(req);
        return await stream.close({});
      case "shutdown":
        syncAll();
        await stream.close({});
        this.options.log("shutdown requested: disks synced");
        await this.mux.close();
        await this.options.onShutdown();
        return;
    }
  }

  async exec(stream: MuxStream, req: ExecRequest): Promise<void> {
    const tty = req.tty;
    const env = tty?.term === undefined ? req.env : { ...req.env, TERM: tty.term };
    let proc: GuestProcess;
    try {
      proc = startProcess(req.argv, {
        ...(env === undefined ? {} : { env }),
        ...(this.options.baseEnv === undefined ? {} : { baseEnv: this.options.baseEnv }),
        ...(req.cwd === undefined ? {} : { cwd: req.cwd }),
        ...(tty === undefined ? {} : { tty: { rows: tty.rows, cols: tty.cols } }),
        stdin: req.stdin === true,
      });
    } catch (e) {
      if (!(e instanceof ProcessError)) throw e;
      if (e.code === "bad_cwd") throw new AgentError("not_found", e.message, { cause: e });
      if (e.code !== "not_found" && e.code !== "not_executable") {
        throw new AgentError("invalid_argument", e.message, { cause: e });
      }
      // Like a shell: a message on stderr (the terminal with tty) and 127/126.
      const text = `shuru-agent: cannot execute ${JSON.stringify(req.argv[0])}: ${e.reason}\n`;
      const channel = stream.channel(tty ? 1 : 2);
      await channel.write(new TextEncoder().encode(text));
      await channel.closeWrite();
      if (!tty) await stream.channel(1).closeWrite();
      await stream.close({ exitCode: e.exitCode });
      return;
    }

    if (req.keep) {
      const kp = this.kept.add({
        argv: req.argv,
        tty: tty !== undefined,
        stdinPiped: req.stdin === true || tty !== undefined,
        process: proc,
        ...(req.label === undefined ? {} : { label: req.label }),
      });
      return await kp.attach(stream, [0, 0], this.options.log);
    }
    const killOnAbort = () => proc.kill("SIGKILL");
    stream.signal.addEventListener("abort", killOnAbort, { once: true });
    try {
      void stream.send({ type: "started", pid: proc.pid }).catch(() => {});
      // Synchronous and in wire order with DATA: a resize sent before some terminal input is in
      // effect before that input can reach the program.
      stream.onMessage((raw) => this.control(stream, proc, raw));
      if (req.stdin === true || tty) {
        stream.channel(0).readable.pipeTo(proc.stdin).catch(() => {
          // The process closed its stdin or exited; the rest of the input has nowhere to go.
        });
      } else {
        // stdin is /dev/null: drop anything the host sends on channel 0.
        void stream.channel(0).readable.cancel().catch(() => {});
      }
      const pumps = [pump(proc.stdout, stream.channel(1))];
      if (proc.stderr) pumps.push(pump(proc.stderr, stream.channel(2)));
      const status = await proc.status;
      await Promise.all(pumps);
      await stream.close(
        status.signal === null
          ? { exitCode: status.code }
          : { exitCode: status.code, signal: status.signal },
      );
    } finally {
      stream.signal.removeEventListener("abort", killOnAbort);
    }
  }

  control(stream: MuxStream, proc: GuestProcess, raw: Record<string, unknown>): void {
    try {
      const m = parseExecMessage(raw);
      if (m.type === "resize") proc.resize({ rows: m.rows, cols: m.cols });
      else if (m.type === "signal") proc.kill(m.signal);
    } catch (e) {
      this.options.log(`ignored message on exec stream ${stream.id}: ${(e as Error).message}`);
    }
  }

  async forward(stream: MuxStream, req: ForwardRequest): Promise<void> {
    const conn = await connectGuestPort(req.port, req.host === undefined ? {} : { host: req.host });
    const channel = stream.channel(0);
    const closeConn = () => {
      try {
        conn.close();
      } catch { /* already closed */ }
    };
    stream.signal.addEventListener("abort", closeConn, { once: true });
    try {
      // A read loop, not conn.readable: Deno closes the whole socket when its readable reaches
      // EOF, which would lose host -> guest bytes still in flight after the server half-closes.
      const toHost = (async () => {
        const buf = new Uint8Array(64 * 1024);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            await channel.write(buf.slice(0, n));
          }
          await channel.closeWrite();
        } catch {
          // Either side went away; the other direction ends on its own.
        }
      })();
      const toGuest = (async () => {
        const reader = channel.readable.getReader();
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            let rest = value;
            while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
          }
          await conn.closeWrite();
        } catch {
          // Either side went away; the other direction ends on its own.
        }
      })();
      await Promise.all([toHost, toGuest]);
      if (!stream.finished) await stream.close({});
    } finally {
      stream.signal.removeEventListener("abort", closeConn);
      closeConn();
    }
  }
}

/**
 * Copies `source` into `channel` and sends FIN. The source ends on its own after the process
 * exits (see EXIT_QUIET_MS in process.ts), so the exit is always reported.
 */
async function pump(source: ReadableStream<Uint8Array>, channel: MuxChannel): Promise<void> {
  const reader = source.getReader();
  try {
    for (;;) {
      const result = await reader.read();
      if (result.done) break;
      await channel.write(result.value);
    }
    await channel.closeWrite();
  } catch {
    // The stream was reset or the connection dropped; stop reading so the process sees EPIPE.
    await reader.cancel().catch(() => {});
  }
}

/** Writes each item as an NDJSON line on `channel`, batching lines; sends FIN; returns the count. */
async function writeLines<T extends object>(
  channel: MuxChannel,
  items: AsyncIterable<T>,
  options: { flushEach?: boolean } = {},
): Promise<number> {
  let batch: Uint8Array[] = [];
  let size = 0;
  let count = 0;
  const flush = async () => {
    if (size === 0) return;
    const out = new Uint8Array(size);
    let off = 0;
    for (const b of batch) {
      out.set(b, off);
      off += b.length;
    }
    batch = [];
    size = 0;
    await channel.write(out);
  };
  for await (const item of items) {
    const line = encodeJsonLine(item as Record<string, unknown>);
    batch.push(line);
    size += line.length;
    count++;
    if (options.flushEach || size >= LINE_BATCH) await flush();
  }
  await flush();
  await channel.closeWrite();
  return count;
}
