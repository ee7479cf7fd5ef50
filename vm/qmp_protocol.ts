/**
 * The QEMU Machine Protocol (QMP) without I/O: framing, message shapes, command encoding and
 * the id bookkeeping of one session. `vm/qmp.ts` drives it over a Unix socket.
 *
 * QMP is a stream of JSON objects in both directions (QEMU ends each with `\r\n`; the decoder
 * does not rely on that). What QEMU sends (docs/interop/qmp-spec.rst in QEMU's tree):
 *
 * ```text
 * greeting  {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22},
 *                                 "package": "..."}, "capabilities": ["oob"]}}
 * success   {"return": VALUE, "id": ID}
 * error     {"error": {"class": "GenericError", "desc": "..."}, "id": ID}
 * event     {"event": "NAME", "data": {...}, "timestamp": {"seconds": S, "microseconds": US}}
 * ```
 *
 * A session starts with the greeting, then the client's `qmp_capabilities`; only then are other
 * commands accepted. Every command we send carries an `id`, and a reply is matched to its
 * command by it (replies without an id, which QEMU sends for input it could not parse, fail
 * the session: we never send such input).
 *
 * @module
 */

/** The largest single message accepted from QEMU (`query-qmp-schema` is about 200 KiB). */
export const MAX_QMP_MESSAGE = 4 * 1024 * 1024;

/** What went wrong talking QMP. */
export type QmpErrorCode =
  /** QEMU answered the command with an error (see `errorClass` and `desc`). */
  | "command_failed"
  /** QEMU sent something that is not QMP (bad JSON, wrong shape, unknown id, too large). */
  | "protocol"
  /** The connection ended (QEMU exited) before the answer. */
  | "closed"
  /** The caller's deadline passed or it aborted. */
  | "aborted";

/** A QMP failure. For `command_failed`, `errorClass` and `desc` are QEMU's own words. */
export class QmpError extends Error {
  /** Machine-readable reason. */
  readonly code: QmpErrorCode;
  /** QEMU's error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`, ...), or "". */
  readonly errorClass: string;
  /** QEMU's description of the error, or "". */
  readonly desc: string;
  /** The command that failed, or "" for session-level errors. */
  readonly command: string;

  /**
   * Creates the error.
   *
   * @param code What went wrong.
   * @param message A message the user can act on.
   * @param details QEMU's class and description, the command, the cause.
   */
  constructor(
    code: QmpErrorCode,
    message: string,
    details: { errorClass?: string; desc?: string; command?: string; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "QmpError";
    this.code = code;
    this.errorClass = details.errorClass ?? "";
    this.desc = details.desc ?? "";
    this.command = details.command ?? "";
  }
}

/** QEMU's version from the greeting. */
export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
  /** Distribution package string (e.g. `Debian 1:7.2+dfsg-7+deb12u18`). */
  package: string;
}

/** One message from QEMU. */
export type QmpMessage =
  | { kind: "greeting"; version: QmpVersion; capabilities: string[] }
  | { kind: "return"; id: string | number | undefined; value: unknown }
  | { kind: "error"; id: string | number | undefined; errorClass: string; desc: string }
  | {
    kind: "event";
    event: string;
    data: Record<string, unknown>;
    /** Microseconds since the epoch, as QEMU stamped it. */
    timestamp: number;
  };

/** An event as delivered to callers. */
export type QmpEvent = Extract<QmpMessage, { kind: "event" }>;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function protocolError(reason: string, cause?: unknown): QmpError {
  return new QmpError("protocol", `Cannot read QEMU's monitor output: ${reason}`, { cause });
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** Turns one parsed JSON object from QEMU into a {@linkcode QmpMessage}, or throws `protocol`. */
export function classify(value: unknown): QmpMessage {
  if (!isObj(value)) throw protocolError("a message is not a JSON object");
  const id = value.id;
  if (id !== undefined && typeof id !== "string" && typeof id !== "number") {
    throw protocolError("a reply id is neither a string nor a number");
  }
  if ("QMP" in value) {
    const qmp = value.QMP;
    if (!isObj(qmp) || !isObj(qmp.version) || !Array.isArray(qmp.capabilities)) {
      throw protocolError("the greeting lacks version or capabilities");
    }
    const q = qmp.version.qemu;
    const num = (v: unknown) => (typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : -1);
    if (!isObj(q) || num(q.major) < 0 || num(q.minor) < 0 || num(q.micro) < 0) {
      throw protocolError("the greeting's version is malformed");
    }
    return {
      kind: "greeting",
      version: {
        major: num(q.major),
        minor: num(q.minor),
        micro: num(q.micro),
        package: typeof qmp.version.package === "string" ? qmp.version.package : "",
      },
      capabilities: qmp.capabilities.filter((c): c is string => typeof c === "string"),
    };
  }
  if ("return" in value) return { kind: "return", id, value: value.return };
  if ("error" in value) {
    const e = value.error;
    if (!isObj(e) || typeof e.class !== "string" || typeof e.desc !== "string") {
      throw protocolError("an error reply lacks class or desc");
    }
    return { kind: "error", id, errorClass: e.class, desc: e.desc };
  }
  if (typeof value.event === "string") {
    const ts = value.timestamp;
    let timestamp = 0;
    if (isObj(ts) && typeof ts.seconds === "number" && typeof ts.microseconds === "number") {
      timestamp = ts.seconds * 1e6 + ts.microseconds;
    }
    return {
      kind: "event",
      event: value.event,
      data: isObj(value.data) ? value.data : {},
      timestamp,
    };
  }
  throw protocolError(`unknown message with keys ${Object.keys(value).slice(0, 5).join(", ")}`);
}

/**
 * Splits QEMU's byte stream into JSON objects (brace depth outside strings), whatever the
 * whitespace between them and however the bytes are chunked.
 */
export class QmpDecoder {
  #buf = new Uint8Array(4096);
  #len = 0;
  /** Bytes of #buf already scanned (the state below describes them). */
  #scanned = 0;
  #depth = 0;
  #inString = false;
  #escape = false;
  #maxMessage: number;

  /** @param maxMessage Largest accepted message in bytes. */
  constructor(maxMessage = MAX_QMP_MESSAGE) {
    this.#maxMessage = maxMessage;
  }

  /** Adds bytes; returns the messages they complete, in order. Throws `protocol` on garbage. */
  push(chunk: Uint8Array): QmpMessage[] {
    if (this.#len + chunk.length > this.#buf.length) {
      let size = this.#buf.length;
      while (size < this.#len + chunk.length) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#len);
    this.#len += chunk.length;
    const out: QmpMessage[] = [];
    let start = 0;
    for (let i = this.#scanned; i < this.#len; i++) {
      const c = this.#buf[i]!;
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === 0x5c) this.#escape = true; // backslash
        else if (c === 0x22) this.#inString = false; // quote
        continue;
      }
      if (this.#depth === 0) {
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
          start = i + 1;
          continue;
        }
        if (c !== 0x7b) throw protocolError(`unexpected byte 0x${c.toString(16)} between messages`);
      }
      if (c === 0x22) this.#inString = true;
      else if (c === 0x7b || c === 0x5b) this.#depth++;
      else if (c === 0x7d || c === 0x5d) {
        if (--this.#depth === 0) {
          out.push(this.#parse(this.#buf.subarray(start, i + 1)));
          start = i + 1;
        }
      }
    }
    // Keep the unfinished message only.
    this.#buf.copyWithin(0, start, this.#len);
    this.#len -= start;
    this.#scanned = this.#len;
    if (this.#len > this.#maxMessage) {
      throw protocolError(`a message is longer than ${this.#maxMessage} bytes`);
    }
    return out;
  }

  /** `true` when bytes of an unfinished message are buffered. */
  get pending(): boolean {
    return this.#len > 0;
  }

  #parse(bytes: Uint8Array): QmpMessage {
    let value: unknown;
    try {
      value = JSON.parse(utf8.decode(bytes));
    } catch (err) {
      throw protocolError("a message is not valid UTF-8 JSON", err);
    }
    return classify(value);
  }
}

/** Encodes one command (`{"execute": ..., "arguments": ..., "id": ...}` and CRLF). */
export function encodeCommand(
  command: string,
  args: Record<string, unknown> | undefined,
  id: string,
): Uint8Array {
  const msg: Obj = { execute: command };
  if (args !== undefined) msg.arguments = args;
  msg.id = id;
  return encoder.encode(JSON.stringify(msg) + "\r\n");
}

/** What {@linkcode QmpSession.receive} found in the bytes. */
export type QmpOutcome<T> =
  | { kind: "greeting"; version: QmpVersion; capabilities: string[] }
  | { kind: "reply"; token: T; command: string; value: unknown }
  | { kind: "failed"; token: T; error: QmpError }
  | { kind: "event"; event: QmpEvent };

interface Pending<T> {
  command: string;
  token: T;
}

/**
 * One QMP session's state: handshake, ids, and the command each reply answers. `T` is the
 * caller's token for a command (e.g. the functions settling its promise); the session keeps
 * it in its single in-flight record and hands it back with the outcome.
 */
export class QmpSession<T> {
  #decoder: QmpDecoder;
  #pending = new Map<string, Pending<T>>();
  #nextId = 1;
  #greeting: QmpVersion | undefined;

  /** @param maxMessage Largest accepted message in bytes. */
  constructor(maxMessage = MAX_QMP_MESSAGE) {
    this.#decoder = new QmpDecoder(maxMessage);
  }

  /** QEMU's version, once the greeting arrived. */
  get version(): QmpVersion | undefined {
    return this.#greeting;
  }

  /** Commands sent and not answered yet. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Registers a command; returns the bytes to send. */
  command(command: string, args: Record<string, unknown> | undefined, token: T): Uint8Array {
    if (!/^[a-z][a-z0-9_-]*$/i.test(command)) {
      throw new RangeError(
        `Cannot send QMP command ${JSON.stringify(command)}: not a command name`,
      );
    }
    const id = `shuru-${this.#nextId++}`;
    this.#pending.set(id, { command, token });
    return encodeCommand(command, args, id);
  }

  /** Feeds bytes from QEMU; returns what they completed. Throws `protocol` on a bad stream. */
  receive(chunk: Uint8Array): QmpOutcome<T>[] {
    const out: QmpOutcome<T>[] = [];
    for (const msg of this.#decoder.push(chunk)) {
      switch (msg.kind) {
        case "greeting":
          if (this.#greeting) throw protocolError("a second greeting arrived");
          this.#greeting = msg.version;
          out.push({ kind: "greeting", version: msg.version, capabilities: msg.capabilities });
          break;
        case "event":
          if (!this.#greeting) throw protocolError("an event arrived before the greeting");
          out.push({ kind: "event", event: msg });
          break;
        case "return":
        case "error": {
          if (!this.#greeting) throw protocolError("a reply arrived before the greeting");
          const key = msg.id === undefined ? undefined : String(msg.id);
          const pending = key === undefined ? undefined : this.#pending.get(key);
          if (key === undefined || !pending) {
            const what = msg.kind === "error" ? `: ${msg.errorClass}: ${msg.desc}` : "";
            throw protocolError(`a reply carries an unknown id ${JSON.stringify(msg.id)}${what}`);
          }
          this.#pending.delete(key);
          if (msg.kind === "return") {
            out.push({
              kind: "reply",
              token: pending.token,
              command: pending.command,
              value: msg.value,
            });
          } else {
            out.push({
              kind: "failed",
              token: pending.token,
              error: new QmpError(
                "command_failed",
                `Cannot run QEMU command ${pending.command}: ${msg.desc} (${msg.errorClass})`,
                { errorClass: msg.errorClass, desc: msg.desc, command: pending.command },
              ),
            });
          }
          break;
        }
      }
    }
    return out;
  }

  /** Ends the session: returns the tokens of every unanswered command (to fail them). */
  drain(): { command: string; token: T }[] {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    return all;
  }
}
