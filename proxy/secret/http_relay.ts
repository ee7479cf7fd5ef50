/**
 * The HTTP/1.1 relay between the guest's plaintext stream (after TLS termination) and the real
 * upstream's plaintext stream that swaps secrets: placeholders become values on the way up,
 * values become placeholders on the way down. The rules are in docs/secrets.md
 * ("HTTP substitution"); the pure pieces are {@linkcode StreamReplacer} (replace.ts), the head
 * codec (http_head.ts), the chunked codec (chunked.ts) and the content decoders
 * (content_decoder.ts). This file is the async loop around them.
 *
 * Two loops run per connection. The request loop reads guest requests, rewrites and forwards
 * them and queues one record per exchange. The response loop takes records in order (HTTP/1.1
 * answers in request order, so this also covers pipelining) and is the only writer to the guest:
 * it relays upstream responses, and writes the relay's own answers (`100 Continue` for bodies it
 * buffers, 4xx/5xx for bad requests) when their turn comes, so they never cut into another
 * response. After a `101` to an upgrade request both directions become raw byte copies.
 *
 * @module
 */

import { concatBytes } from "../../io/mod.ts";
import { ChunkedDecoder, encodeChunk, encodeLastChunk } from "../http/mod.ts";
import { type ContentCoding, contentCodingOf, ContentDecoder } from "./content_decoder.ts";
import {
  DEFAULT_MAX_BUFFERED_BODY,
  HttpStatus,
  type HttpStatusCode,
  LINGER_MAX_BYTES,
  LINGER_MS,
  READ_BUFFER_BYTES,
  reasonPhrase,
} from "../http/mod.ts";
import { HttpRelayError } from "../http/mod.ts";
import { HttpReader } from "../http/mod.ts";
import {
  type BodyFraming,
  bytesToByteString,
  byteStringToBytes,
  hasToken,
  type HeaderField,
  headerValue,
  isFieldValue,
  isTextualContentType,
  narrowAcceptEncoding,
  parseRequestHead,
  parseResponseHead,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  withoutHeader,
} from "../http/mod.ts";
import { RequestInjector, type SecretPair } from "./inject.ts";
import { type ReplacePair, StreamReplacer } from "./replace.ts";
import type { HostStream } from "../dial.ts";

export type { InjectPlace, SecretPair } from "./inject.ts";

/**
 * One end of a plaintext byte stream: the relay's host-stream shape (a `Deno.TcpConn` or
 * `Deno.TlsConn` is one), so the terminator hands the same objects to both.
 */
export type ByteDuplex = HostStream;

/** Options of {@linkcode relayHttpWithSecrets}. */
export interface HttpSecretRelayOptions {
  /**
   * The secrets this connection carries (bound to its host): their placeholders become values
   * in requests, where each secret's `inject` allows (docs/secrets.md, "Where values go").
   */
  inject: readonly SecretPair[];
  /** Secrets bound to this host that must not be sent on this connection (plain HTTP). */
  withhold?: readonly SecretPair[];
  /** Called once per withheld secret (its placeholder) the first time it is left in place. */
  onWithheld?: (placeholder: string) => void;
  /** Values replaced by their placeholders in responses coming back (every secret of the run). */
  scrub: readonly SecretPair[];
  /**
   * Largest request body buffered to substitute in it and fix Content-Length.
   *
   * @default {16 MiB}
   */
  maxBufferedBody?: number;
  /** Optional: called once per request with method/target/status for logging (no secret values!). */
  onExchange?: (e: { method: string; target: string; status: number }) => void;
}

/** Counters of one relayed connection. */
export interface HttpSecretRelayStats {
  /** Requests answered (by the upstream or by the relay itself). */
  requests: number;
  /** Bytes written to the upstream. */
  bytesUp: number;
  /** Bytes written to the guest. */
  bytesDown: number;
}

/**
 * Relays HTTP/1.1 from `client` (the guest) to `upstream` until either closes; resolves when
 * both directions are done, after closing both streams. Never throws for protocol errors from
 * the guest: it answers 400 (or 405/413/431/501/505) and closes; an upstream that breaks
 * HTTP gets the guest a 502 when no byte of that response was sent yet, else a closed stream.
 *
 * @example
 * ```ts ignore
 * const stats = await relayHttpWithSecrets(guestConn, upstreamConn, {
 *   inject: [{ placeholder: "sk-shuru-7f3a", value: realKey }],
 *   scrub: [{ placeholder: "sk-shuru-7f3a", value: realKey }],
 * });
 * ```
 */
export function relayHttpWithSecrets(
  client: ByteDuplex,
  upstream: ByteDuplex,
  options: HttpSecretRelayOptions,
): Promise<HttpSecretRelayStats> {
  return new HttpSecretRelay(client, upstream, options).run();
}

const encoder = new TextEncoder();
/** One empty pair list, so pass-through replacers share their (empty) tables. */
const NO_PAIRS: readonly ReplacePair[] = [];

function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** One queued exchange, consumed in order by the response loop. */
type Exchange =
  | {
    kind: "upstream";
    method: string;
    /** The target as the guest sent it (placeholders, never values). */
    target: string;
    http10: boolean;
    closeAfter: boolean;
    /** Set for upgrade requests: resolves true after a 101 (raw mode), false otherwise. */
    upgraded: PromiseWithResolvers<boolean> | null;
  }
  /** Send `100 Continue` to the guest, then resolve (the body is read after). */
  | { kind: "continue"; sent: PromiseWithResolvers<void> }
  /** Answer the guest ourselves and end the connection. */
  | { kind: "local"; status: HttpStatusCode; message: string; method: string; target: string }
  /** The guest is done: finish and close. */
  | { kind: "end" };

/** A FIFO with one waiting consumer. */
class ExchangeQueue {
  #items: Exchange[] = [];
  #waiter: ((e: Exchange) => void) | null = null;

  push(e: Exchange): void {
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      w(e);
    } else {
      this.#items.push(e);
    }
  }

  next(): Promise<Exchange> {
    const e = this.#items.shift();
    if (e !== undefined) return Promise.resolve(e);
    return new Promise((resolve) => this.#waiter = resolve);
  }
}

class HttpSecretRelay {
  readonly #client: ByteDuplex;
  readonly #upstream: ByteDuplex;
  readonly #guestIn: HttpReader;
  readonly #upstreamIn: HttpReader;
  readonly #queue = new ExchangeQueue();
  readonly #maxBufferedBody: number;
  readonly #onExchange: HttpSecretRelayOptions["onExchange"];
  /** Placeholder → value, where each secret may go. */
  readonly #inject: RequestInjector;
  /** Value → placeholder. */
  readonly #scrubPairs: ReplacePair[];
  readonly #scrub: StreamReplacer;
  readonly #stats: HttpSecretRelayStats = { requests: 0, bytesUp: 0, bytesDown: 0 };
  #closed = false;
  readonly #chunkScratch = new Uint8Array(READ_BUFFER_BYTES + 64);
  readonly #chunkScratchDown = new Uint8Array(READ_BUFFER_BYTES + 64);
  /** Handoffs between the loops still pending; failed on close so no loop waits forever. */
  readonly #handoffs = new Set<{ reject(reason: unknown): void }>();
  /** True once the current request was queued (its answer must come from upstream). */
  #requestQueued = false;

  constructor(client: ByteDuplex, upstream: ByteDuplex, options: HttpSecretRelayOptions) {
    this.#client = client;
    this.#upstream = upstream;
    this.#guestIn = new HttpReader(client);
    this.#upstreamIn = new HttpReader(upstream);
    this.#maxBufferedBody = options.maxBufferedBody ?? DEFAULT_MAX_BUFFERED_BODY;
    this.#onExchange = options.onExchange;
    // Empty strings cannot be needles: an empty placeholder or value is skipped.
    this.#inject = new RequestInjector(options.inject, {
      ...(options.withhold ? { withhold: options.withhold } : {}),
      ...(options.onWithheld ? { onWithheld: options.onWithheld } : {}),
    });
    this.#scrubPairs = options.scrub.filter((s) => s.value.length > 0)
      .map((s) => ({ from: utf8(s.value), to: utf8(s.placeholder) }));
    this.#scrub = new StreamReplacer(this.#scrubPairs);
  }

  async run(): Promise<HttpSecretRelayStats> {
    let upgraded = false;
    const requests = this.#requestLoop().catch(() => this.#closeAll());
    const responses = this.#responseLoop().then(
      (mode) => {
        upgraded = mode === "upgraded";
        // Done with HTTP: stop the request loop too (it may sit in a read of the guest).
        if (!upgraded) this.#closeAll();
      },
      () => this.#closeAll(),
    );
    await Promise.all([requests, responses]);
    this.#closeAll();
    return this.#stats;
  }

  #closeAll(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const handoff of this.#handoffs) handoff.reject(new Error("the relay closed"));
    this.#queue.push({ kind: "end" });
    for (const conn of [this.#client, this.#upstream]) {
      try {
        conn.close();
      } catch {
        // Already closed by the peer side of our own code; nothing left to free.
      }
    }
  }

  async #writeAll(conn: ByteDuplex, bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
  }

  async #writeUp(bytes: Uint8Array): Promise<void> {
    await this.#writeAll(this.#upstream, bytes);
    this.#stats.bytesUp += bytes.length;
  }

  async #writeDown(bytes: Uint8Array): Promise<void> {
    await this.#writeAll(this.#client, bytes);
    this.#stats.bytesDown += bytes.length;
  }

  // ---- guest → upstream ----

  async #requestLoop(): Promise<void> {
    for (;;) {
      this.#requestQueued = false;
      let exchange: Exchange & { kind: "upstream" };
      let head: RequestHead | null = null;
      try {
        const raw = await this.#guestIn.readHead();
        if (raw === null) {
          this.#queue.push({ kind: "end" });
          return;
        }
        head = parseRequestHead(raw);
        if (head.method === "CONNECT") {
          throw new HttpRelayError(
            "method-not-allowed",
            "Cannot relay CONNECT: the connection already goes to the origin",
          );
        }
        const framing = requestBodyFraming(head);
        const upgrade = hasToken(head.headers, "connection", "upgrade") &&
          (headerValue(head.headers, "upgrade") ?? "").toLowerCase().split(",").some((p) =>
            p.trim().startsWith("websocket")
          );
        exchange = {
          kind: "upstream",
          method: head.method,
          target: head.target,
          http10: head.version === "HTTP/1.0",
          closeAfter: head.version === "HTTP/1.0"
            ? !hasToken(head.headers, "connection", "keep-alive")
            : hasToken(head.headers, "connection", "close"),
          upgraded: upgrade ? this.#handoff<boolean>() : null,
        };
        const upHead = this.#rewriteRequestHead(head, upgrade);
        await this.#forwardRequest(upHead, framing, exchange);
      } catch (e) {
        if (!(e instanceof HttpRelayError) || this.#requestQueued || this.#closed) throw e;
        // Nothing of this request went upstream: answer it ourselves, in turn, and end.
        this.#queue.push({
          kind: "local",
          status: e.status,
          message: e.message,
          method: head?.method ?? "",
          target: head?.target ?? "",
        });
        return;
      }
      if (exchange.upgraded !== null && await exchange.upgraded.promise) {
        await this.#pipeRaw(this.#guestIn, this.#upstream, (b) => this.#stats.bytesUp += b);
        return;
      }
      if (exchange.closeAfter) {
        this.#queue.push({ kind: "end" });
        return;
      }
    }
  }

  /** The request head as the upstream gets it: secrets in, codings narrowed. */
  #rewriteRequestHead(head: RequestHead, upgrade: boolean): RequestHead {
    const target = this.#inject.target(head.target);
    let headers: HeaderField[] = head.headers.map(([name, value]) => {
      const v = this.#inject.field(name, value);
      if (!isFieldValue(v)) {
        throw new HttpRelayError(
          "unsafe-substitution",
          `Cannot substitute a secret into field ${name}: its value holds control bytes`,
        );
      }
      return [name, v];
    });
    if (!upgrade && headerValue(headers, "upgrade") !== undefined) {
      // Only websocket switches to raw mode; any other protocol stays HTTP/1.1 we can read.
      headers = withoutHeader(headers, "upgrade");
      headers = headers.map(([n, v]) =>
        n.toLowerCase() === "connection"
          ? [n, v.split(",").filter((t) => t.trim().toLowerCase() !== "upgrade").join(",").trim()]
          : [n, v]
      );
      headers = headers.filter(([n, v]) => n.toLowerCase() !== "connection" || v.length > 0);
    }
    if (!this.#scrub.isIdentity) {
      // Only codings we can decode (to scrub); a range of a compressed body cannot be decoded.
      const accept = headerValue(headers, "range") !== undefined
        ? "identity"
        : narrowAcceptEncoding(headerValue(headers, "accept-encoding"));
      headers = setHeader(headers, "Accept-Encoding", accept);
    }
    return { ...head, target, headers };
  }

  #handoff<T>(): PromiseWithResolvers<T> {
    const handoff = Promise.withResolvers<T>();
    this.#handoffs.add(handoff);
    const forget = () => this.#handoffs.delete(handoff);
    handoff.promise.then(forget, forget);
    return handoff;
  }

  #queueExchange(exchange: Exchange & { kind: "upstream" }): void {
    this.#requestQueued = true;
    this.#queue.push(exchange);
  }

  /** Sends head and body upstream. */
  async #forwardRequest(
    head: RequestHead,
    framing: BodyFraming,
    exchange: Exchange & { kind: "upstream" },
  ): Promise<void> {
    const textual = !this.#inject.bodyIsIdentity &&
      isTextualContentType(headerValue(head.headers, "content-type")) &&
      contentCodingOf(headerValue(head.headers, "content-encoding")) === "identity";
    const expectsContinue = hasToken(head.headers, "expect", "100-continue");

    if (framing.kind === "length" && textual && framing.length <= this.#maxBufferedBody) {
      // Buffer, substitute, fix the length. The guest waits for 100 before sending: give it.
      let upHead = head;
      if (expectsContinue) {
        upHead = { ...head, headers: withoutHeader(head.headers, "expect") };
        const sent = this.#handoff<void>();
        this.#queue.push({ kind: "continue", sent });
        await sent.promise;
      }
      const body = this.#inject.body(await this.#guestIn.readExact(framing.length));
      upHead = {
        ...upHead,
        headers: setHeader(upHead.headers, "Content-Length", String(body.length)),
      };
      this.#queueExchange(exchange);
      await this.#writeUp(concatBytes([serializeRequestHead(upHead), body]));
      return;
    }

    this.#queueExchange(exchange);
    await this.#writeUp(serializeRequestHead(head));
    if (framing.kind === "length") {
      // Not textual or above the cap: relayed unchanged.
      for (let left = framing.length; left > 0;) {
        const piece = await this.#guestIn.readSome(left);
        if (piece === null) throw new Error("guest ended inside a request body");
        left -= piece.length;
        await this.#writeUp(piece);
      }
    } else if (framing.kind === "chunked") {
      await this.#forwardChunked(textual);
    }
  }

  /** Re-chunks a chunked request body, substituting on the fly when it is textual. */
  async #forwardChunked(textual: boolean): Promise<void> {
    const decoder = new ChunkedDecoder();
    const replacer = new StreamReplacer(textual ? this.#inject.bodyPairs : NO_PAIRS);
    while (!decoder.done) {
      const piece = await this.#guestIn.readSome(READ_BUFFER_BYTES);
      if (piece === null) throw new Error("guest ended inside a chunked body");
      const { consumed, data } = decoder.push(piece);
      // Bytes past the last chunk belong to the next request: give them back.
      this.#guestIn.unread(piece.length - consumed);
      for (const d of data) {
        const out = replacer.push(d);
        if (out.length > 0) await this.#writeUp(encodeChunk(out, this.#chunkScratch));
      }
    }
    const tail = replacer.flush();
    if (tail.length > 0) await this.#writeUp(encodeChunk(tail, this.#chunkScratch));
    const trailers = decoder.trailers.map(([n, v]): HeaderField => {
      const injected = textual ? this.#inject.trailer(v) : v;
      if (!isFieldValue(injected)) {
        throw new HttpRelayError(
          "unsafe-substitution",
          `Cannot substitute a secret into trailer ${n}: control bytes`,
        );
      }
      return [n, injected];
    });
    await this.#writeUp(encodeLastChunk(trailers));
  }

  async #pipeRaw(from: HttpReader, to: ByteDuplex, count: (n: number) => void): Promise<void> {
    for (;;) {
      const piece = await from.readSome(READ_BUFFER_BYTES);
      if (piece === null) break;
      await this.#writeAll(to, piece);
      count(piece.length);
    }
    await to.closeWrite();
  }

  // ---- upstream → guest ----

  async #responseLoop(): Promise<"closed" | "upgraded"> {
    for (;;) {
      const exchange = await this.#queue.next();
      switch (exchange.kind) {
        case "end":
          return "closed";
        case "continue":
          await this.#writeDown(utf8(`HTTP/1.1 100 ${reasonPhrase(HttpStatus.CONTINUE)}\r\n\r\n`));
          exchange.sent.resolve();
          break;
        case "local":
          await this.#answerLocally(exchange.status, exchange.message);
          this.#report(exchange.method, exchange.target, exchange.status);
          await this.#lingerGuest();
          return "closed";
        case "upstream": {
          const outcome = await this.#relayResponse(exchange);
          if (outcome !== "keep-alive") return outcome;
        }
      }
    }
  }

  async #answerLocally(status: HttpStatusCode, message: string): Promise<void> {
    const body = utf8(message + "\n");
    const head =
      `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    await this.#writeDown(concatBytes([utf8(head), body]));
  }

  /** Half-closes towards the guest and drops what it still sends, bounded (see LINGER_MS). */
  async #lingerGuest(): Promise<void> {
    const timer = setTimeout(() => this.#closeAll(), LINGER_MS);
    try {
      await this.#client.closeWrite();
      for (let dropped = 0; dropped < LINGER_MAX_BYTES;) {
        const piece = await this.#guestIn.readSome(READ_BUFFER_BYTES);
        if (piece === null) break;
        dropped += piece.length;
      }
    } catch {
      // The guest reset or the timer closed the relay: either way we are done.
    } finally {
      clearTimeout(timer);
    }
  }

  #report(method: string, target: string, status: number): void {
    this.#stats.requests++;
    if (method !== "") this.#onExchange?.({ method, target, status });
  }

  async #relayResponse(
    exchange: Exchange & { kind: "upstream" },
  ): Promise<"keep-alive" | "closed" | "upgraded"> {
    let head: ResponseHead;
    let framing: BodyFraming;
    let decoder: ContentCoding | null;
    try {
      for (;;) {
        const raw = await this.#upstreamIn.readHead();
        if (raw === null) {
          exchange.upgraded?.resolve(false);
          return "closed";
        }
        head = parseResponseHead(raw);
        if (head.status === HttpStatus.SWITCHING_PROTOCOLS) {
          if (exchange.upgraded === null) {
            throw new HttpRelayError(
              "malformed-head",
              "Cannot relay a 101 response: the request asked for no upgrade",
            );
          }
          await this.#writeDown(serializeResponseHead(this.#scrubHead(head)));
          this.#report(exchange.method, exchange.target, head.status);
          exchange.upgraded.resolve(true);
          await this.#pipeRaw(this.#upstreamIn, this.#client, (b) => this.#stats.bytesDown += b);
          return "upgraded";
        }
        if (head.status >= 200) break;
        // Interim (100 Continue, 103 Early Hints): relay it, the final response follows.
        await this.#writeDown(serializeResponseHead(this.#scrubHead(head)));
      }
      exchange.upgraded?.resolve(false);
      framing = responseBodyFraming(head, exchange.method);
      const coding = contentCodingOf(headerValue(head.headers, "content-encoding"));
      decoder = null;
      if (!this.#scrub.isIdentity && framing.kind !== "none") {
        if (coding === "unsupported") {
          throw new HttpRelayError(
            "unsupported-content-coding",
            "Cannot scrub secrets from the response: its Content-Encoding is not gzip, deflate or br",
          );
        }
        if (coding !== "identity") decoder = coding;
      }
    } catch (e) {
      exchange.upgraded?.resolve(false);
      if (!(e instanceof HttpRelayError)) throw e;
      // Nothing of this response reached the guest yet (interim ones aside): say so.
      await this.#answerLocally(HttpStatus.BAD_GATEWAY, e.message);
      this.#report(exchange.method, exchange.target, HttpStatus.BAD_GATEWAY);
      return "closed";
    }

    // The framing towards the guest: keep Content-Length only when the length cannot change.
    const lengthChanges = decoder !== null || !StreamReplacer.preservesLength(this.#scrubPairs);
    let out: BodyFraming["kind"];
    if (framing.kind === "none") out = "none";
    else if (framing.kind === "length" && !lengthChanges) out = "length";
    else if (framing.kind === "close" || exchange.http10) out = "close";
    else out = "chunked";

    const scrubbed = this.#scrubHead(head);
    let headers = scrubbed.headers;
    if (decoder !== null) headers = withoutHeader(headers, "content-encoding");
    if (out === "chunked" && framing.kind !== "chunked") {
      headers = setHeader(withoutHeader(headers, "content-length"), "Transfer-Encoding", "chunked");
    } else if (out === "close" && framing.kind !== "close") {
      headers = withoutHeader(withoutHeader(headers, "content-length"), "transfer-encoding");
      headers = setHeader(headers, "Connection", "close");
    }
    await this.#writeDown(serializeResponseHead({ ...scrubbed, headers }));

    if (framing.kind !== "none") await this.#relayResponseBody(framing, decoder, out === "chunked");
    this.#report(exchange.method, exchange.target, head.status);

    const upstreamCloses = framing.kind === "close" ||
      hasToken(head.headers, "connection", "close") ||
      (head.version === "HTTP/1.0" && !hasToken(head.headers, "connection", "keep-alive"));
    return exchange.closeAfter || upstreamCloses || out === "close" ? "closed" : "keep-alive";
  }

  #scrubHead(head: ResponseHead): ResponseHead {
    if (this.#scrub.isIdentity) return head;
    const scrub = (v: string) => bytesToByteString(this.#scrub.replaceWhole(byteStringToBytes(v)));
    return {
      ...head,
      reason: scrub(head.reason),
      headers: head.headers.map(([n, v]) => [n, scrub(v)]),
    };
  }

  /** The upstream body's data pieces (views, valid until the next one is asked for). */
  async *#upstreamBody(framing: BodyFraming, trailers: HeaderField[]): AsyncGenerator<Uint8Array> {
    if (framing.kind === "length") {
      for (let left = framing.length; left > 0;) {
        const piece = await this.#upstreamIn.readSome(Math.min(left, READ_BUFFER_BYTES));
        if (piece === null) {
          throw new HttpRelayError(
            "truncated",
            "Cannot relay response: upstream ended inside the body",
          );
        }
        left -= piece.length;
        yield piece;
      }
    } else if (framing.kind === "chunked") {
      const decoder = new ChunkedDecoder();
      while (!decoder.done) {
        const piece = await this.#upstreamIn.readSome(READ_BUFFER_BYTES);
        if (piece === null) {
          throw new HttpRelayError(
            "truncated",
            "Cannot relay response: upstream ended inside the body",
          );
        }
        const { consumed, data } = decoder.push(piece);
        this.#upstreamIn.unread(piece.length - consumed);
        for (const d of data) yield d;
      }
      trailers.push(...decoder.trailers);
    } else if (framing.kind === "close") {
      for (;;) {
        const piece = await this.#upstreamIn.readSome(READ_BUFFER_BYTES);
        if (piece === null) return;
        yield piece;
      }
    }
  }

  async #relayResponseBody(
    framing: BodyFraming,
    coding: ContentCoding | null,
    chunked: boolean,
  ): Promise<void> {
    const replacer = new StreamReplacer(this.#scrubPairs);
    // Each direction re-chunks into its own scratch buffer, reused after every awaited write.
    const scratch = this.#chunkScratchDown;
    const send = async (bytes: Uint8Array) => {
      if (bytes.length > 0) await this.#writeDown(chunked ? encodeChunk(bytes, scratch) : bytes);
    };
    const trailers: HeaderField[] = [];
    if (coding === null) {
      for await (const piece of this.#upstreamBody(framing, trailers)) {
        await send(replacer.push(piece));
      }
    } else {
      const decoder = new ContentDecoder(coding);
      const feeding = (async () => {
        try {
          for await (const piece of this.#upstreamBody(framing, trailers)) {
            await decoder.write(piece);
          }
          decoder.end();
        } catch (e) {
          decoder.destroy();
          throw e;
        }
      })();
      try {
        for await (const piece of decoder.output()) await send(replacer.push(piece));
      } catch (e) {
        // The feeder may sit in an upstream read: do not wait for it (closing the relay ends it).
        decoder.destroy();
        feeding.catch(() => {});
        throw e;
      }
      await feeding;
    }
    await send(replacer.flush());
    if (chunked) {
      const scrubbed = this.#scrubHead({
        version: "HTTP/1.1",
        status: 200,
        reason: "",
        headers: trailers,
      });
      await this.#writeDown(encodeLastChunk(scrubbed.headers));
    }
  }
}

/** The fields with `name` set to `value`: the first occurrence replaced in place, others dropped. */
function setHeader(headers: readonly HeaderField[], name: string, value: string): HeaderField[] {
  const lower = name.toLowerCase();
  const out: HeaderField[] = [];
  let set = false;
  for (const [n, v] of headers) {
    if (n.toLowerCase() !== lower) out.push([n, v]);
    else if (!set) {
      out.push([n, value]);
      set = true;
    }
  }
  if (!set) out.push([name, value]);
  return out;
}
