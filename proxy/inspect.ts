/**
 * The allow-list's look inside a guest connection, without I/O: fed the bytes the guest sends
 * (and, for plain HTTP, the bytes the server answers), it says which bytes may go on and which
 * names must be allowed before them. With an allow-list the name check cannot be skipped:
 *
 * - TLS: the ClientHello is reassembled across records (`sniff.ts`) and its server name read;
 *   a hello whose name cannot be read (cut, too large, repeated, malformed) is refused, never
 *   passed on. After the hello everything is encrypted and passes.
 * - HTTP/1.x: every request on the connection, not only the first, goes through the strict
 *   head parser (`proxy/secret/`: CRLF only, one head up to 64 KiB, no folding); it must have
 *   exactly one Host, an absolute-form or authority-form target must name the same host, and
 *   its body is followed (Content-Length, chunked) to find the next request. An upgrade
 *   request (Upgrade, CONNECT) holds the guest's further bytes until the server's answer: a
 *   101 (or a 2xx to CONNECT) turns the rest into a tunnel, anything else resumes the checks.
 *   Upgrading to HTTP/2 (h2c) is refused: its streams name hosts we would not see.
 * - Other bytes (a server-first protocol's commands, binary protocols) pass.
 *
 * Nothing has to arrive at once: a guest that stays silent, or sends half a hello, gets its
 * bytes held until they can be judged, however long that takes; the relay dials in the
 * meantime (server-first protocols need the server's banner) but forwards nothing unjudged.
 *
 * Without name checks (secrets without an allow-list) only the first bytes are classified, so
 * the dialer knows the protocol.
 *
 * @module
 */

import {
  ChunkedDecoder,
  findHeadEnd,
  headerTokens,
  headerValues,
  HttpRelayError,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
} from "./http/mod.ts";
import { normalizeHostName } from "./dns/mod.ts";
import { classifyFirstBytes, readClientHello } from "./sniff.ts";
import { isIpv4 } from "./wire/address.ts";

const CR = 0x0d;
const LF = 0x0a;

/** What the relay must do, in order. */
export type InspectEvent =
  /** Forward these bytes (every earlier `name` was allowed). */
  | { kind: "pass"; bytes: Uint8Array }
  /**
   * The bytes after this ask for `name` (normalised, or an IPv4 literal): it must be allowed
   * before they go on. Absent for a ClientHello without a server name.
   */
  | { kind: "name"; via: "tls" | "http"; name?: string }
  /** The connection must be refused; nothing more passes. */
  | { kind: "refuse"; reason: string };

/** What the guest speaks, as far as the inspector knows. */
export type InspectedProtocol = "unknown" | "tls" | "http" | "other";

/** Settings of a {@linkcode StreamInspector}. */
export interface StreamInspectorOptions {
  /**
   * Check names (there is an allow-list): TLS and HTTP must show a readable name, and every
   * HTTP request is checked. False: only classify the first bytes, then pass everything.
   */
  checkNames: boolean;
}

type RequestState =
  | { kind: "start" }
  | { kind: "tls" }
  | { kind: "head" }
  | { kind: "body-length"; remaining: number }
  | { kind: "body-chunked"; decoder: ChunkedDecoder }
  | { kind: "await-response" }
  | { kind: "open" }
  | { kind: "refused" };

/** Where a host name stands in a Host header or a request target. */
interface Authority {
  host: string;
}

/** Inspects one guest connection. */
export class StreamInspector {
  readonly #checkNames: boolean;
  #state: RequestState = { kind: "start" };
  #protocol: InspectedProtocol = "unknown";
  #held: Uint8Array = new Uint8Array(0);
  /** The request forwarded last asks to become a tunnel (upgrade or CONNECT). */
  #tunnelAsked = false;
  readonly #responses = new ResponseTracker();

  /** An inspector for one connection. */
  constructor(options: StreamInspectorOptions) {
    this.#checkNames = options.checkNames;
  }

  /** What the guest speaks so far. */
  get protocol(): InspectedProtocol {
    return this.#protocol;
  }

  /**
   * The guest's bytes are held until the server answers an upgrade request: feed the server's
   * bytes to {@linkcode observeResponse}, then {@linkcode push} (with no bytes) again.
   */
  get waiting(): boolean {
    return this.#state.kind === "await-response" && this.#responses.tunnel === "pending";
  }

  /** Bytes held, not yet judged. */
  get heldBytes(): number {
    return this.#held.length;
  }

  /** Feeds bytes the guest sent (may be empty: re-judges what is held). */
  push(bytes: Uint8Array): InspectEvent[] {
    const out: InspectEvent[] = [];
    if (this.#state.kind === "refused") return out;
    if (bytes.length > 0) {
      if (this.#held.length === 0) this.#held = bytes;
      else {
        const merged = new Uint8Array(this.#held.length + bytes.length);
        merged.set(this.#held);
        merged.set(bytes, this.#held.length);
        this.#held = merged;
      }
    }
    while (this.#held.length > 0 || this.#state.kind === "await-response") {
      const more = this.#step(out);
      if ((this.#state as RequestState).kind === "refused") {
        this.#held = new Uint8Array(0);
        break;
      }
      if (!more) break;
    }
    return out;
  }

  /** Feeds bytes the server sent back (plain HTTP with name checks only; ignored otherwise). */
  observeResponse(bytes: Uint8Array): void {
    if (this.#protocol === "http" && this.#checkNames) this.#responses.push(bytes);
  }

  /** Moves on by one piece; false when more input is needed. */
  #step(out: InspectEvent[]): boolean {
    switch (this.#state.kind) {
      case "start":
        return this.#classify();
      case "tls":
        return this.#clientHello(out);
      case "head":
        return this.#head(out);
      case "body-length": {
        const take = Math.min(this.#state.remaining, this.#held.length);
        this.#pass(out, take);
        this.#state.remaining -= take;
        if (this.#state.remaining === 0) this.#afterMessage();
        return true;
      }
      case "body-chunked": {
        let consumed: number;
        try {
          consumed = this.#state.decoder.push(this.#held).consumed;
        } catch (err) {
          return this.#refuse(out, `HTTP request body cannot be followed (${messageOf(err)})`);
        }
        const done = this.#state.decoder.done;
        this.#pass(out, consumed);
        if (done) this.#afterMessage();
        return done || this.#held.length > 0;
      }
      case "await-response": {
        const tunnel = this.#responses.tunnel;
        if (tunnel === "pending") return false;
        if (tunnel === "lost") {
          return this.#refuse(
            out,
            "HTTP upgrade request whose answer cannot be followed (the server's responses " +
              "do not parse)",
          );
        }
        this.#state = tunnel === "open" ? { kind: "open" } : { kind: "head" };
        return true;
      }
      case "open":
        this.#pass(out, this.#held.length);
        return false;
      case "refused":
        return false;
    }
  }

  #classify(): boolean {
    const kind = classifyFirstBytes(this.#held);
    if (kind === "need-more") return false;
    this.#protocol = kind;
    if (!this.#checkNames || kind === "other") this.#state = { kind: "open" };
    else this.#state = kind === "tls" ? { kind: "tls" } : { kind: "head" };
    return true;
  }

  #clientHello(out: InspectEvent[]): boolean {
    const hello = readClientHello(this.#held);
    if (hello.kind === "need-more") return false;
    if (hello.kind === "bad") return this.#refuse(out, `TLS ${hello.reason}`);
    if (hello.serverName === undefined) out.push({ kind: "name", via: "tls" });
    else {
      const name = isIpv4(hello.serverName)
        ? hello.serverName
        : normalizeHostName(hello.serverName);
      if (name === undefined) return this.#refuse(out, "TLS server name is not a valid host name");
      out.push({ kind: "name", via: "tls", name });
    }
    // After the hello everything is encrypted: the name is all there is to check.
    this.#state = { kind: "open" };
    return true;
  }

  #head(out: InspectEvent[]): boolean {
    const held = this.#held;
    // Empty lines before a request line are skipped by servers (RFC 9112 section 2.2).
    if (held[0] === CR && held.length >= 2 && held[1] === LF) {
      this.#pass(out, 2);
      return true;
    }
    if (held[0] === CR && held.length < 2) return false;
    const end = findHeadEnd(held);
    if (end < 0) {
      // Refuse at once what can never become a strict head, instead of holding it forever.
      for (let i = held.indexOf(LF); i >= 0; i = held.indexOf(LF, i + 1)) {
        if (i === 0 || held[i - 1] !== CR) {
          return this.#refuse(out, "HTTP request head has a line ending in a bare LF");
        }
      }
      if (held.length > MAX_HEAD_BYTES) {
        return this.#refuse(out, `HTTP request head larger than ${MAX_HEAD_BYTES / 1024} KiB`);
      }
      return false;
    }
    if (end > MAX_HEAD_BYTES) {
      return this.#refuse(out, `HTTP request head larger than ${MAX_HEAD_BYTES / 1024} KiB`);
    }
    let head: RequestHead;
    try {
      head = parseRequestHead(held.subarray(0, end));
    } catch (err) {
      return this.#refuse(out, `HTTP request head cannot be checked (${messageOf(err)})`);
    }
    const checked = checkRequest(head);
    if (typeof checked === "string") return this.#refuse(out, checked);
    let framing;
    try {
      framing = head.method === "CONNECT" ? { kind: "none" as const } : requestBodyFraming(head);
    } catch (err) {
      return this.#refuse(out, `HTTP request body cannot be followed (${messageOf(err)})`);
    }
    out.push({ kind: "name", via: "http", name: checked.host });
    this.#pass(out, end);
    this.#tunnelAsked = checked.tunnel !== undefined;
    this.#responses.expect(head.method, checked.tunnel);
    switch (framing.kind) {
      case "length":
        this.#state = { kind: "body-length", remaining: framing.length };
        break;
      case "chunked":
        this.#state = { kind: "body-chunked", decoder: new ChunkedDecoder() };
        break;
      default:
        this.#afterMessage();
    }
    return true;
  }

  #afterMessage(): void {
    this.#state = this.#tunnelAsked ? { kind: "await-response" } : { kind: "head" };
    this.#tunnelAsked = false;
  }

  #pass(out: InspectEvent[], n: number): void {
    if (n === 0) return;
    out.push({ kind: "pass", bytes: this.#held.subarray(0, n) });
    this.#held = this.#held.subarray(n);
  }

  #refuse(out: InspectEvent[], reason: string): boolean {
    this.#state = { kind: "refused" };
    out.push({ kind: "refuse", reason });
    return false;
  }
}

function messageOf(err: unknown): string {
  if (!(err instanceof HttpRelayError)) throw err;
  return err.message.replace(/^Cannot [^:]*: /, "");
}

/**
 * Checks a request head's names: exactly one Host, a target whose host (absolute-form, or
 * authority-form for CONNECT) is the same, no upgrade to HTTP/2. Returns the host and whether
 * the request asks for a tunnel, or why it is refused.
 */
function checkRequest(
  head: RequestHead,
): { host: string; tunnel: "upgrade" | "connect" | undefined } | string {
  const hosts = headerValues(head.headers, "host");
  if (hosts.length === 0) return "HTTP request without a Host header";
  if (hosts.length > 1) return `HTTP request with ${hosts.length} Host headers`;
  const host = parseAuthority(hosts[0]!);
  if (typeof host === "string") return `HTTP Host ${host}`;
  const target = head.target;
  let targetHost: Authority | string | undefined;
  if (head.method === "CONNECT") targetHost = parseAuthority(target);
  else if (target.startsWith("/")) targetHost = undefined;
  else if (target === "*") {
    if (head.method !== "OPTIONS") return "HTTP request target * outside OPTIONS";
    targetHost = undefined;
  } else {
    const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
    if (absolute === null) return "HTTP request target is not origin-form or absolute-form";
    targetHost = parseAuthority(absolute[1]!);
  }
  if (typeof targetHost === "string") return `HTTP request target ${targetHost}`;
  if (targetHost !== undefined && targetHost.host !== host.host) {
    return "HTTP request target names another host than its Host header";
  }
  const upgrades = headerTokens(head.headers, "upgrade");
  if (upgrades.some((u) => u.startsWith("h2") || u.startsWith("http/"))) {
    return "HTTP request asks to switch to HTTP/2, whose requests name hosts unchecked";
  }
  const tunnel = head.method === "CONNECT"
    ? "connect"
    : headerValues(head.headers, "upgrade").length > 0
    ? "upgrade"
    : undefined;
  return { host: host.host, tunnel };
}

/** `host[:port]` (a Host value or a target's authority), or why it is not one. */
function parseAuthority(text: string): Authority | string {
  if (text.includes("@")) return "carries user information";
  if (text.startsWith("[")) return "is an IPv6 address";
  const m = /^([^:]*)(?::(\d{0,5}))?$/.exec(text);
  if (m === null) return "is not host[:port]";
  const raw = m[1]!;
  if (isIpv4(raw)) return { host: raw };
  const host = normalizeHostName(raw);
  return host === undefined ? "is not a valid host name" : { host };
}

/**
 * Follows the server's responses on a plain-HTTP connection, only so an upgrade request's
 * answer is recognised: 1xx are skipped, bodies are skipped by their framing, and a response
 * that does not parse makes the tracker give up ("lost").
 */
class ResponseTracker {
  /** The methods of requests forwarded and not yet answered, in order. */
  readonly #queue: { method: string; tunnel: "upgrade" | "connect" | undefined }[] = [];
  #state:
    | { kind: "head"; buf: Uint8Array }
    | { kind: "length"; remaining: number }
    | { kind: "chunked"; decoder: ChunkedDecoder }
    | { kind: "rest" }
    | { kind: "lost" } = { kind: "head", buf: new Uint8Array(0) };
  /** The answer to the last tunnel request: pending, granted ("open"), declined, or lost. */
  tunnel: "pending" | "open" | "declined" | "lost" = "declined";

  expect(method: string, tunnel: "upgrade" | "connect" | undefined): void {
    this.#queue.push({ method, tunnel });
    if (tunnel !== undefined) this.tunnel = this.#state.kind === "lost" ? "lost" : "pending";
  }

  push(input: Uint8Array): void {
    let bytes = input;
    while (bytes.length > 0) {
      const s = this.#state;
      if (s.kind === "rest" || s.kind === "lost") return;
      if (s.kind === "length") {
        const take = Math.min(s.remaining, bytes.length);
        s.remaining -= take;
        bytes = bytes.subarray(take);
        if (s.remaining === 0) this.#state = { kind: "head", buf: new Uint8Array(0) };
        continue;
      }
      if (s.kind === "chunked") {
        try {
          bytes = bytes.subarray(s.decoder.push(bytes).consumed);
        } catch {
          this.#lose();
          return;
        }
        if (s.decoder.done) this.#state = { kind: "head", buf: new Uint8Array(0) };
        continue;
      }
      const buf = new Uint8Array(s.buf.length + bytes.length);
      buf.set(s.buf);
      buf.set(bytes, s.buf.length);
      const end = findHeadEnd(buf, Math.max(0, s.buf.length - 3));
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) this.#lose();
        else this.#state = { kind: "head", buf };
        return;
      }
      bytes = buf.subarray(end);
      this.#state = { kind: "head", buf: new Uint8Array(0) };
      this.#response(buf.subarray(0, end));
    }
  }

  #response(headBytes: Uint8Array): void {
    const front = this.#queue[0];
    let status: number;
    let framing;
    try {
      const head = parseResponseHead(headBytes);
      status = head.status;
      if (front === undefined) throw new Error("a response nobody asked for");
      framing = responseBodyFraming(head, front.method);
    } catch {
      this.#lose();
      return;
    }
    if (status === 101) {
      if (front.tunnel !== "upgrade") return this.#lose();
      this.tunnel = "open";
      this.#state = { kind: "rest" };
      return;
    }
    if (status < 200) return; // 100, 102, 103: the final response follows
    this.#queue.shift();
    if (front.tunnel === "connect" && status < 300) {
      this.tunnel = "open";
      this.#state = { kind: "rest" };
      return;
    }
    if (front.tunnel !== undefined) this.tunnel = "declined";
    if (framing.kind === "length") this.#state = { kind: "length", remaining: framing.length };
    else if (framing.kind === "chunked") {
      this.#state = { kind: "chunked", decoder: new ChunkedDecoder() };
    } else if (framing.kind === "close") this.#state = { kind: "rest" };
  }

  #lose(): void {
    this.#state = { kind: "lost" };
    if (this.tunnel === "pending") this.tunnel = "lost";
  }
}
