/**
 * Serves the guest's connections to hosts that carry a secret: TLS from the guest ends here
 * (with a leaf from the run's CA), the plaintext HTTP/1.1 goes through
 * {@linkcode relayHttpWithSecrets} (placeholders in, values scrubbed out), and leaves for the
 * real host over TLS verified against the host's trust store (Deno's, with `DENO_CERT`).
 * Plain HTTP to such a host is relayed the same way without TLS, but carries only the values of
 * secrets that allow it (`allowHttp`): the others keep their placeholders, and one line says
 * why. Anything else (and every connection to other hosts) is not touched.
 *
 * The relay sees one `HostStream` per connection; here that stream's two directions are
 * {@linkcode ByteChannel}s, served by an in-process task.
 *
 * @module
 */

import { Duplex } from "node:stream";
import tls from "node:tls";
import type { DialTarget, HostStream } from "../dial.ts";
import { HostPatternSet } from "../policy.ts";
import type { CertificateAuthority } from "./ca.ts";
import { ByteChannel } from "./channel.ts";
import { type ByteDuplex, relayHttpWithSecrets } from "./http_relay.ts";
import type { InjectPlace, SecretPair } from "./inject.ts";

/** A secret of the run, as the proxy holds it. */
export interface Secret {
  /** Environment variable name in the guest. */
  name: string;
  /** The real value (host memory only). */
  value: string;
  /** What the guest sees instead. */
  placeholder: string;
  /** Host patterns the value may be sent to (`api.example.com`, `*.example.com`). */
  hosts: readonly string[];
  /**
   * Where in a request the value may go.
   *
   * @default {["header"]}
   */
  inject?: readonly InjectPlace[];
  /** Also send the value over plain HTTP (else HTTP requests keep the placeholder). */
  allowHttp?: boolean;
}

/** Options of {@linkcode SecretTerminator}. */
export interface SecretTerminatorOptions {
  /** The run's secrets. */
  secrets: readonly Secret[];
  /** The run's CA (leaves for the secrets' hosts). */
  ca: CertificateAuthority;
  /**
   * One line for the user (never a value): a terminated connection failed on the host's side,
   * or a secret was withheld from plain HTTP.
   */
  onError?: (line: string) => void;
  /** Extra CA certificates (PEM) trusted upstream besides the host's store; tests use it. */
  upstreamCaCerts?: string[];
}

/** How long a closing TLS stream may take to hand its last bytes to the guest. */
const CLOSE_GRACE_MS = 30_000;

/** ALPN: HTTP/1.1 only, so guests never speak HTTP/2 to the substituting relay. */
const ALPN = ["http/1.1"];

/** Terminates TLS for the secrets' hosts; everything else passes through. */
export class SecretTerminator {
  readonly #bindings: {
    name: string;
    pair: SecretPair;
    hosts: HostPatternSet;
    allowHttp: boolean;
  }[];
  readonly #scrub: SecretPair[];
  readonly #ca: CertificateAuthority;
  readonly #onError: (line: string) => void;
  readonly #upstreamCaCerts: string[] | undefined;
  /** `secret host` pairs already told about plain HTTP (one line each). */
  readonly #withheldSaid = new Set<string>();

  /** Validates every host pattern (throws SyntaxError naming a bad one). */
  constructor(options: SecretTerminatorOptions) {
    this.#bindings = options.secrets.map((s) => ({
      name: s.name,
      pair: {
        placeholder: s.placeholder,
        value: s.value,
        ...(s.inject !== undefined ? { inject: s.inject } : {}),
      },
      hosts: new HostPatternSet(s.hosts),
      allowHttp: s.allowHttp === true,
    }));
    this.#scrub = this.#bindings.map((b) => b.pair);
    this.#ca = options.ca;
    this.#onError = options.onError ?? ((line) => console.error(line));
    this.#upstreamCaCerts = options.upstreamCaCerts;
  }

  /** Does some secret go to `name`? (Its connections are then inspected and terminated.) */
  handles(name: string): boolean {
    return this.#bindings.some((b) => b.hosts.matches(name));
  }

  /** A `Dialer` for the relay: connects, then {@linkcode wrap}s. */
  async dial(target: DialTarget): Promise<HostStream> {
    const tcp = await Deno.connect({ hostname: target.hostname, port: target.port });
    tcp.setNoDelay(true);
    return this.wrap(tcp, target);
  }

  /**
   * The stream the relay uses for a dialed connection: `tcp` itself, or a terminating stream
   * when `target.name` carries a secret and the guest speaks TLS or HTTP.
   */
  wrap(tcp: Deno.TcpConn, target: DialTarget): HostStream {
    const name = target.name;
    if (name === undefined || !this.handles(name)) return tcp;
    if (target.protocol !== "tls" && target.protocol !== "http") return tcp;
    const bound = this.#bindings.filter((b) => b.hosts.matches(name));
    // Plain HTTP crosses networks readable by others: only opted-in values go that way.
    const plain = target.protocol === "http";
    const inject = bound.filter((b) => !plain || b.allowHttp).map((b) => b.pair);
    const withhold = bound.filter((b) => plain && !b.allowHttp).map((b) => b.pair);
    const toHost = new ByteChannel();
    const toGuest = new ByteChannel();
    const guestSide: HostStream = {
      read: (p) => toGuest.read(p),
      write: (p) => toHost.write(p),
      closeWrite: () => Promise.resolve(toHost.end()),
      close: () => {
        toHost.abort();
        toGuest.abort();
        closeQuietly(tcp);
      },
    };
    const served: ByteDuplex = {
      read: (p) => toHost.read(p),
      write: (p) => toGuest.write(p),
      closeWrite: () => Promise.resolve(toGuest.end()),
      // Whatever is queued for the guest still reaches it (the last response of a connection
      // usually is); only the relay's own close drops it.
      close: () => {
        toHost.abort();
        toGuest.end();
      },
    };
    const where = `${name}:${target.port}`;
    const serving = target.protocol === "tls"
      ? this.#serveTls(served, tcp, name, inject)
      : this.#serveHttp(served, tcp, inject, withhold, where);
    serving.catch((err) => {
      if (err instanceof GuestLeftError) return;
      this.#onError(`shuru: secret proxy for ${where}: ${describe(err)}`);
    }).finally(() => {
      toGuest.end();
      closeQuietly(tcp);
    });
    return guestSide;
  }

  async #serveHttp(
    guest: ByteDuplex,
    tcp: Deno.TcpConn,
    inject: SecretPair[],
    withhold: SecretPair[],
    where: string,
  ): Promise<void> {
    const onWithheld = (placeholder: string) => {
      const secret = this.#bindings.find((b) => b.pair.placeholder === placeholder)?.name ?? "";
      const key = `${secret} ${where}`;
      if (this.#withheldSaid.has(key)) return;
      this.#withheldSaid.add(key);
      this.#onError(
        `shuru: secret ${secret} not sent to ${where}: plain HTTP, so the request carries its ` +
          `placeholder (use https, or allow_http for this secret)`,
      );
    };
    await relayHttpWithSecrets(guest, tcp, { inject, withhold, onWithheld, scrub: this.#scrub });
  }

  async #serveTls(
    guest: ByteDuplex,
    tcp: Deno.TcpConn,
    name: string,
    inject: SecretPair[],
  ): Promise<void> {
    const identity = await this.#ca.leaf(name);
    const plain = new tls.TLSSocket(channelDuplex(guest), {
      isServer: true,
      secureContext: tls.createSecureContext({ key: identity.keyPem, cert: identity.certPem }),
      ALPNProtocols: ALPN,
    });
    const guestPlain = new NodeSocketStream(plain);
    try {
      const upstream = Deno.startTls(tcp, {
        hostname: name,
        alpnProtocols: ALPN,
        ...(this.#upstreamCaCerts ? { caCerts: this.#upstreamCaCerts } : {}),
      }).then(async (conn) => {
        try {
          await conn.handshake();
        } catch (err) {
          closeQuietly(conn);
          throw err;
        }
        return conn;
      });
      const [guestReady, upstreamReady] = await Promise.allSettled([
        guestPlain.secured,
        upstream,
      ]);
      if (guestReady.status === "rejected") {
        if (upstreamReady.status === "fulfilled") closeQuietly(upstreamReady.value);
        throw guestReady.reason;
      }
      if (upstreamReady.status === "rejected") {
        // The guest's half works: a 502 tells it the real cause in its own terms.
        await badGateway(guestPlain, name, upstreamReady.reason).catch(() => {});
        throw upstreamReady.reason;
      }
      const conn = upstreamReady.value;
      try {
        await relayHttpWithSecrets(guestPlain, conn, { inject, scrub: this.#scrub });
      } finally {
        closeQuietly(conn);
      }
    } finally {
      guestPlain.close();
    }
  }
}

/** A Node duplex whose bytes come from and go to a {@link ByteDuplex} (the TLS "wire"). */
function channelDuplex(wire: ByteDuplex): Duplex {
  let pumping = false;
  const duplex = new Duplex({
    read() {
      if (pumping) return;
      pumping = true;
      (async () => {
        const buf = new Uint8Array(64 * 1024);
        for (;;) {
          const n = await wire.read(buf);
          if (n === null) {
            duplex.push(null);
            return;
          }
          if (!duplex.push(buf.slice(0, n))) break;
        }
        pumping = false;
      })().catch((err) => duplex.destroy(err));
    },
    write(chunk: Uint8Array, _encoding, callback) {
      wire.write(chunk).then(() => callback(), callback);
    },
    final(callback) {
      wire.closeWrite().then(() => callback(), callback);
    },
    destroy(err, callback) {
      wire.close();
      callback(err);
    },
  });
  return duplex;
}

/** A `node:tls` socket (server side) as a {@link ByteDuplex}, with backpressure both ways. */
class NodeSocketStream implements ByteDuplex {
  /** Resolves when the TLS handshake with the guest completed. */
  readonly secured: Promise<void>;
  #socket: tls.TLSSocket;
  #pending: Uint8Array | undefined;
  #ended = false;
  #error: Error | undefined;
  #secure = false;
  #wake: (() => void) | undefined;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.secured = new Promise((resolve, reject) => {
      socket.once("secure", () => {
        this.#secure = true;
        resolve();
      });
      socket.once("error", reject);
      socket.once("close", () => reject(new GuestLeftError()));
      // A guest that leaves mid-handshake (its stream ends) gets "end" alone from node:tls:
      // no "close" or "error" follows while the handshake is pending, so this settles it.
      socket.once("end", () => reject(new GuestLeftError()));
    });
    this.secured.catch(() => {});
    socket.on("readable", () => this.#notify());
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#error = err;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /** The guest's handshake completed. */
  get isSecure(): boolean {
    return this.#secure;
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#pending === undefined) {
        const chunk = this.#socket.read() as Uint8Array | null;
        if (chunk !== null) this.#pending = chunk;
      }
      const pending = this.#pending;
      if (pending !== undefined) {
        const n = Math.min(p.length, pending.length);
        p.set(pending.subarray(0, n));
        this.#pending = n === pending.length ? undefined : pending.subarray(n);
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  async write(p: Uint8Array): Promise<number> {
    if (this.#error) throw this.#error;
    if (!this.#socket.write(p.slice())) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          this.#socket.off("close", onClose);
          resolve();
        };
        const onClose = () => {
          this.#socket.off("drain", onDrain);
          reject(this.#error ?? new Deno.errors.BrokenPipe("the guest closed the connection"));
        };
        this.#socket.once("drain", onDrain);
        this.#socket.once("close", onClose);
      });
    }
    return p.length;
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  /**
   * Ends the TLS stream (close_notify after every queued byte), then frees the socket; a guest
   * that stops reading gets {@linkcode CLOSE_GRACE_MS} before the socket is destroyed.
   */
  close(): void {
    const socket = this.#socket;
    if (socket.destroyed) return;
    // Before the handshake nothing is owed to the guest (and end() would wait for "secure").
    if (socket.writableFinished || !this.#secure) {
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    socket.once("finish", () => socket.destroy());
    socket.once("close", () => clearTimeout(timer));
    socket.end();
  }
}

/** The guest closed its TLS connection before the handshake completed (nothing to report). */
class GuestLeftError extends Error {
  constructor() {
    super("the guest closed the TLS connection during the handshake");
  }
}

/** Answers the guest's first request with 502 naming why the real host cannot be reached. */
async function badGateway(guest: ByteDuplex, name: string, err: unknown): Promise<void> {
  const body = `shuru: cannot reach ${name} for the secret proxy: ${describe(err)}\n`;
  const text = `HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n` +
    `content-length: ${new TextEncoder().encode(body).length}\r\nconnection: close\r\n\r\n${body}`;
  await guest.write(new TextEncoder().encode(text));
  await guest.closeWrite();
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}
