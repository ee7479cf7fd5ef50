/**
 * The I/O loop around the sans-I/O stack: reads frames from a link, feeds the stack with
 * `performance.now()`, answers its DNS lookups and connection requests through the policy and
 * the fake-IP pool, dials allowed destinations with `Deno.connect`, relays bytes with
 * backpressure both ways, and keeps one timer armed for the stack's earliest `pollAt`.
 *
 * Backpressure: guest → host, the relay takes bytes out of the stack only after the previous
 * host write finished, so a slow host socket leaves them in the receive buffer and the window
 * advertised to the guest shrinks. Host → guest, it reads the host socket only into the free
 * space of the stack's send buffer, which empties as fast as the guest acknowledges.
 *
 * @module
 */

import { writeAll } from "../io/mod.ts";
import type { Dialer, DialTarget, HostStream } from "./dial.ts";
import type { FrameLink } from "./link.ts";
import { type ConnectDecision, EXPOSE_HOST_NAME, type NetworkPolicy } from "./policy.ts";
import { type InspectEvent, StreamInspector } from "./inspect.ts";
import { FakeIpPool, type FakeIpPoolOptions } from "./name_map.ts";
import { NetworkStack, type StackConfig, type StackEvent } from "./stack.ts";
import { ipv4ToString, isIpv4, parseIpv4 } from "./wire/address.ts";

/** Resolves a name to IPv4 addresses on the host (empty: does not exist). */
export type { Dialer, DialTarget, HostStream } from "./dial.ts";

/** Resolves a name to IPv4 addresses on the host (empty: does not exist). */
export type Resolver = (name: string) => Promise<number[]>;

/** One line of the connection log (`--net-log`). */
export interface ConnectionRecord {
  /** ISO time the guest asked. */
  time: string;
  /** Name the guest resolved, if any. */
  name?: string;
  /** Address the guest connected to (a fake-pool address for names). */
  address: string;
  /** Port. */
  port: number;
  /** What happened. */
  decision: "allowed" | "blocked" | "failed";
  /** Why it was blocked or failed. */
  reason?: string;
  /** Bytes guest → host. */
  bytesUp: number;
  /** Bytes host → guest. */
  bytesDown: number;
  /** Milliseconds from SYN to close. */
  durationMs: number;
}

/** Settings of a relay. */
export interface RelayOptions {
  /** Frames to and from the guest. */
  link: FrameLink;
  /** Who may resolve and connect where. */
  policy: NetworkPolicy;
  /** Stack addresses and caps. */
  stack?: StackConfig;
  /** Fake-IP pool settings. */
  pool?: FakeIpPoolOptions;
  /** Host resolver (default: `Deno.resolveDns(name, "A")`). Tests pass their own. */
  resolve?: Resolver;
  /** Dialer (default: `Deno.connect`). */
  dial?: Dialer;
  /**
   * Names whose connections are looked at before dialing even without an allow-list (the
   * dialer then learns the protocol from `DialTarget.protocol`; secrets need it).
   */
  inspect?: (name: string) => boolean;
  /** A refused name or connection, one line (default: printed on stderr), rate-limited. */
  onBlocked?: (line: string) => void;
  /** Called once per finished connection (for `--net-log`). */
  onConnection?: (record: ConnectionRecord) => void;
  /** TTL of our DNS answers, seconds (default 60). */
  dnsTtl?: number;
  /** Give up dialing after this many ms (default 10 s). */
  connectTimeoutMs?: number;
  /** Give up resolving after this many ms (default 5 s). */
  resolveTimeoutMs?: number;
  /**
   * An inspected connection whose guest has not shown a name within this many ms is dialed to
   * its own name, so server-first protocols (SSH, SMTP) get their banner; whatever the guest
   * sends later is still inspected before it goes on (default 3 s).
   */
  silentStartMs?: number;
}

/** Bytes taken from the stack per host write. */
const RELAY_CHUNK = 256 * 1024;
/** Bytes read from a host socket at once (further bounded by the stack's send capacity). */
const HOST_READ_CHUNK = 64 * 1024;
/** How long an inspected connection may stay silent before it is dialed by its own name. */
const SILENT_START_MS = 3_000;
/** Smallest host read while the guest still has bytes queued. */
const MIN_HOST_READ = 16 * 1024;
/** A blocked line for the same destination is repeated at most this often. */
const BLOCKED_LINE_INTERVAL_MS = 10_000;
/** Names whose host addresses are remembered between DNS answer and connect. */
const MAX_RESOLVED_NAMES = 4096;
/** How long a host resolution is reused before a connection resolves the name again. */
const RESOLVED_TTL_MS = 60_000;

/** Wakes one waiter; a wake with nobody waiting is remembered once. */
class Signal {
  #waiter: (() => void) | undefined;
  #pending = false;
  wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w) w();
    else this.#pending = true;
  }
  wait(): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiter = resolve);
  }
}

/** Everything about one guest connection, in one record. */
interface Flow {
  id: number;
  name: string | undefined;
  address: number;
  port: number;
  startedAt: number;
  time: string;
  conn: HostStream | undefined;
  decision: ConnectionRecord["decision"] | undefined;
  reason: string | undefined;
  bytesUp: number;
  bytesDown: number;
  /** The stack removed the connection. */
  closed: boolean;
  /** Bytes the guest sent that were still in the stack at close. */
  unread: Uint8Array | undefined;
  /** The guest → host direction has ended (EOF delivered or failed). */
  upDone: boolean;
  /** Looks inside the connection (allow-list, or a secret's host). */
  inspector: StreamInspector | undefined;
  readable: Signal;
  writable: Signal;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The default resolver: the host's DNS via Deno. */
export async function hostResolver(name: string): Promise<number[]> {
  try {
    return (await Deno.resolveDns(name, "A")).map(parseIpv4);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

async function defaultDial(target: DialTarget): Promise<HostStream> {
  const conn = await Deno.connect({ hostname: target.hostname, port: target.port });
  conn.setNoDelay(true);
  return conn;
}

/** Runs the stack for one guest. */
export class Relay {
  /** The stack (counters and limits are read from it). */
  readonly stack: NetworkStack;
  /** Names behind pool addresses. */
  readonly pool: FakeIpPool;
  readonly #link: FrameLink;
  readonly #policy: NetworkPolicy;
  readonly #resolve: Resolver;
  readonly #dial: Dialer;
  readonly #inspect: (name: string) => boolean;
  readonly #onBlocked: (line: string) => void;
  readonly #onConnection: ((r: ConnectionRecord) => void) | undefined;
  readonly #dnsTtl: number;
  readonly #connectTimeout: number;
  readonly #resolveTimeout: number;
  readonly #silentStart: number;
  readonly #flows = new Map<number, Flow>();
  readonly #resolved = new Map<string, { addresses: number[]; expiresAt: number }>();
  readonly #blockedAt = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #pumpScheduled = false;
  #waitingForLink = false;
  #closed = false;

  /** A relay; call `run()` to start. */
  constructor(opts: RelayOptions) {
    this.#link = opts.link;
    this.#policy = opts.policy;
    this.stack = new NetworkStack(opts.stack);
    this.pool = new FakeIpPool(opts.pool);
    this.#resolve = opts.resolve ?? hostResolver;
    this.#dial = opts.dial ?? defaultDial;
    this.#inspect = opts.inspect ?? (() => false);
    this.#onBlocked = opts.onBlocked ?? ((line) => console.error(line));
    this.#onConnection = opts.onConnection;
    this.#dnsTtl = opts.dnsTtl ?? 60;
    this.#connectTimeout = opts.connectTimeoutMs ?? 10_000;
    this.#resolveTimeout = opts.resolveTimeoutMs ?? 5_000;
    this.#silentStart = opts.silentStartMs ?? SILENT_START_MS;
  }

  /** Connections being relayed. */
  get flowCount(): number {
    return this.#flows.size;
  }

  /** Runs until the link closes (or `close()`); then closes every host connection. */
  async run(): Promise<void> {
    try {
      for (;;) {
        const frames = await this.#link.receive();
        if (frames === null || this.#closed) break;
        const now = performance.now();
        for (const f of frames) this.stack.receiveFrame(f, now);
        this.#pump();
      }
    } finally {
      this.close();
    }
  }

  /** Stops: closes the link and every host connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#link.close();
    for (const f of this.#flows.values()) this.#finish(f);
  }

  // ---------------------------------------------------------------------------------------

  #schedulePump(): void {
    if (this.#pumpScheduled || this.#closed) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#closed) return;
    for (let e = this.stack.nextEvent(); e; e = this.stack.nextEvent()) this.#handle(e);
    const now = performance.now();
    if (!this.#waitingForLink) {
      let full = false;
      this.stack.dispatch(now, (frame) => {
        if (this.#link.send(frame)) return true;
        full = true;
        return false;
      });
      if (full) {
        this.#waitingForLink = true;
        this.#link.flush().then(() => {
          this.#waitingForLink = false;
          this.#pump();
        });
      }
      // Dispatch can close connections and make room: handle what it raised.
      for (let e = this.stack.nextEvent(); e; e = this.stack.nextEvent()) this.#handle(e);
    }
    this.#armTimer(now);
  }

  #armTimer(now: number): void {
    const at = this.#waitingForLink ? undefined : this.stack.pollAt();
    if (at === undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
      return;
    }
    if (at <= now) {
      this.#schedulePump();
      return;
    }
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#pump();
    }, Math.max(0, at - now));
  }

  #handle(e: StackEvent): void {
    switch (e.type) {
      case "dns-lookup":
        this.#lookup(e.id, e.name).catch(() => this.stack.answerDns(e.id, { kind: "servfail" }))
          .finally(() => this.#schedulePump());
        return;
      case "connect":
        this.#connect(e).finally(() => this.#schedulePump());
        return;
      case "readable":
        this.#flows.get(e.id)?.readable.wake();
        return;
      case "writable":
        this.#flows.get(e.id)?.writable.wake();
        return;
      case "closed": {
        const f = this.#flows.get(e.id);
        if (!f) return;
        f.closed = true;
        if (e.unread.length > 0) f.unread = e.unread;
        if (e.reason !== "closed" && e.reason !== "refused") {
          f.reason ??= `connection ${e.reason}`;
        }
        f.readable.wake();
        f.writable.wake();
        // A normal close lets the guest→host loop deliver the last bytes first.
        if (e.reason !== "closed" || !f.conn || f.upDone) this.#finish(f);
        return;
      }
      case "limit":
        this.#blocked("limit", `shuru: ${e.message}`);
        return;
    }
  }

  #blocked(key: string, line: string): void {
    const now = performance.now();
    const last = this.#blockedAt.get(key);
    if (last !== undefined && now - last < BLOCKED_LINE_INTERVAL_MS) return;
    if (this.#blockedAt.size >= 1024) this.#blockedAt.clear();
    this.#blockedAt.set(key, now);
    this.#onBlocked(line);
  }

  async #lookup(id: number, name: string): Promise<void> {
    const verdict = this.#policy.checkName(name);
    if (!verdict.allowed) {
      this.stack.answerDns(id, { kind: "nxdomain" });
      this.#blocked(name, `shuru: blocked ${name} (${verdict.reason})`);
      return;
    }
    if (name !== EXPOSE_HOST_NAME && this.#policy.addHostAddress(name) === undefined) {
      let addresses: number[];
      try {
        addresses = await withTimeout(
          this.#resolve(name),
          this.#resolveTimeout,
          `resolving ${name}`,
        );
      } catch {
        this.stack.answerDns(id, { kind: "servfail" });
        return;
      }
      if (addresses.length === 0) {
        this.stack.answerDns(id, { kind: "nxdomain" });
        return;
      }
      this.#remember(name, addresses);
    }
    this.stack.answerDns(id, {
      kind: "addresses",
      addresses: [this.pool.assign(name)],
      ttl: this.#dnsTtl,
    });
  }

  #remember(name: string, addresses: number[]): void {
    this.#resolved.delete(name);
    if (this.#resolved.size >= MAX_RESOLVED_NAMES) {
      this.#resolved.delete(this.#resolved.keys().next().value!);
    }
    this.#resolved.set(name, { addresses, expiresAt: performance.now() + RESOLVED_TTL_MS });
  }

  #recall(name: string): number[] | undefined {
    const entry = this.#resolved.get(name);
    if (entry === undefined || entry.expiresAt < performance.now()) return undefined;
    return entry.addresses;
  }

  async #connect(e: Extract<StackEvent, { type: "connect" }>): Promise<void> {
    const address = e.destination.address;
    const port = e.destination.port;
    const name = this.pool.nameOf(address);
    const flow: Flow = {
      id: e.id,
      name,
      address,
      port,
      startedAt: performance.now(),
      time: new Date().toISOString(),
      conn: undefined,
      decision: undefined,
      reason: undefined,
      bytesUp: 0,
      bytesDown: 0,
      closed: false,
      unread: undefined,
      upDone: false,
      inspector: undefined,
      readable: new Signal(),
      writable: new Signal(),
    };
    this.#flows.set(e.id, flow);
    const target = `${name ?? ipv4ToString(address)}:${port}`;
    const decision = await this.#decide(name, address, port);
    if (!decision.allowed) {
      this.#block(flow, target, decision.reason, () => this.stack.refuse(e.id));
      return;
    }
    // With an allow-list, the names inside the connection (TLS SNI, every HTTP Host) must be
    // allowed too: accept first, then judge the guest's bytes before any of them go on.
    const checkNames = this.#policy.hasAllowList;
    if (name !== EXPOSE_HOST_NAME && (checkNames || (name !== undefined && this.#inspect(name)))) {
      flow.inspector = new StreamInspector({ checkNames });
      this.stack.accept(e.id);
      this.#schedulePump();
      await this.#inspected(flow, flow.inspector, decision);
      return;
    }
    let conn: HostStream;
    try {
      conn = await withTimeout(
        this.#dial({
          hostname: decision.hostname,
          port: decision.port,
          ...(name !== undefined ? { name } : {}),
        }),
        this.#connectTimeout,
        `connecting to ${target}`,
      );
    } catch (err) {
      flow.decision = "failed";
      flow.reason = err instanceof Error ? err.message : String(err);
      this.stack.refuse(e.id);
      this.#finish(flow);
      return;
    }
    if (flow.closed || this.#closed) {
      conn.close();
      this.#finish(flow);
      return;
    }
    flow.conn = conn;
    flow.decision = "allowed";
    this.stack.accept(e.id);
    this.#schedulePump();
    await Promise.all([this.#guestToHost(flow, conn), this.#hostToGuest(flow, conn)]);
  }

  /**
   * Relays an accepted connection whose bytes the inspector judges: each name it reads must be
   * allowed before the bytes after it go on; the host is dialed with the first bytes that may
   * go on (to the first name read, else to the connection's own destination `own`), or once
   * the guest stayed silent for `silentStartMs` (server-first protocols). Nothing the guest
   * sends is forwarded unjudged, whenever it arrives.
   */
  async #inspected(
    flow: Flow,
    inspector: StreamInspector,
    own: Extract<ConnectDecision, { allowed: true }>,
  ): Promise<void> {
    const label = flow.name ?? ipv4ToString(flow.address);
    const allowedNames = new Set<string>([label]);
    let dialTo: DialTarget = {
      hostname: own.hostname,
      port: own.port,
      ...(flow.name !== undefined ? { name: flow.name } : {}),
    };
    const dialBy = flow.startedAt + this.#silentStart;
    let conn: HostStream | undefined;
    let down: Promise<void> | undefined;
    /** Dials `dialTo`; false (and the flow finished) when that failed. */
    const open = async (): Promise<boolean> => {
      const protocol = inspector.protocol === "unknown" ? "other" : inspector.protocol;
      let c: HostStream;
      try {
        c = await withTimeout(
          this.#dial({ ...dialTo, protocol }),
          this.#connectTimeout,
          `connecting to ${dialTo.name ?? dialTo.hostname}:${dialTo.port}`,
        );
      } catch (err) {
        flow.decision = "failed";
        flow.reason = err instanceof Error ? err.message : String(err);
        this.stack.abort(flow.id);
        this.#schedulePump();
        this.#finish(flow);
        return false;
      }
      if (flow.closed || this.#closed) {
        c.close();
        this.#finish(flow);
        return false;
      }
      conn = c;
      flow.conn = c;
      flow.decision = "allowed";
      down = this.#hostToGuest(flow, c);
      return true;
    };
    /** Acts on the inspector's events in order; false when the flow is over. */
    const apply = async (events: InspectEvent[]): Promise<boolean> => {
      for (const ev of events) {
        if (ev.kind === "refuse") {
          this.#block(flow, `${label}:${flow.port}`, ev.reason, () => this.stack.abort(flow.id));
          return false;
        }
        if (ev.kind === "name") {
          const what = ev.via === "tls" ? "TLS server name" : "HTTP Host";
          if (ev.name === undefined) {
            // A ClientHello without SNI: fine to an allowed literal address, never to a name.
            if (flow.name === undefined) continue;
            this.#block(
              flow,
              `${label}:${flow.port}`,
              "TLS ClientHello without a server name (SNI)",
              () => this.stack.abort(flow.id),
            );
            return false;
          }
          if (allowedNames.has(ev.name)) continue;
          const decision = isIpv4(ev.name)
            ? { allowed: false as const, reason: "an address, not a name from --allow-host" }
            : await this.#decide(ev.name, undefined, flow.port);
          if (!decision.allowed) {
            this.#block(
              flow,
              `${ev.name}:${flow.port}`,
              `${what}: ${decision.reason}`,
              () => this.stack.abort(flow.id),
            );
            return false;
          }
          if (flow.closed || this.#closed) return false;
          allowedNames.add(ev.name);
          if (conn === undefined) {
            // Not dialed yet: the name the guest asks for is where it goes.
            dialTo = { hostname: decision.hostname, port: decision.port, name: ev.name };
            flow.name = ev.name;
          }
          continue;
        }
        if (conn === undefined && !await open()) return false;
        await writeAll(conn!, ev.bytes);
        flow.bytesUp += ev.bytes.length;
        this.#schedulePump(); // the stack may owe the guest a window update
      }
      return true;
    };
    try {
      for (;;) {
        if (flow.closed && flow.unread === undefined) break;
        if (this.#closed) break;
        if (inspector.waiting) {
          // An upgrade request waits for the server's answer (the down loop wakes us).
          await flow.readable.wait();
          if (!inspector.waiting && !await apply(inspector.push(new Uint8Array(0)))) return;
          continue;
        }
        const data = flow.closed ? null : this.stack.recv(flow.id, RELAY_CHUNK);
        if (data === null) {
          // The guest's FIN: the last bytes are judged like any others.
          const last = flow.unread ?? new Uint8Array(0);
          flow.unread = undefined;
          if (!await apply(inspector.push(last))) return;
          if (conn !== undefined) await conn.closeWrite().catch(() => {});
          else if (!flow.closed) {
            flow.reason = "closed by the guest before anything could go on";
            this.stack.close(flow.id);
            this.#schedulePump();
          }
          break;
        }
        if (data.length > 0) {
          this.#schedulePump();
          if (!await apply(inspector.push(data))) return;
          continue;
        }
        const left = dialBy - performance.now();
        if (conn === undefined && left <= 0) {
          // Silent (or undecided) for too long: a server-first protocol waits for a banner.
          if (!await open()) return;
          continue;
        }
        if (conn !== undefined) {
          await flow.readable.wait();
          continue;
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          flow.readable.wait(),
          new Promise<void>((r) => timer = setTimeout(r, left)),
        ]);
        clearTimeout(timer);
      }
    } catch (err) {
      if (!flow.closed) {
        flow.reason ??= err instanceof Error ? err.message : String(err);
        this.stack.abort(flow.id);
        this.#schedulePump();
      }
    }
    flow.upDone = true;
    if (flow.closed || conn === undefined) this.#finish(flow);
    await down;
  }

  /** The policy's decision for a destination: by name (resolved on the host) or by address. */
  async #decide(name: string | undefined, address: number, port: number): Promise<ConnectDecision>;
  async #decide(name: string, address: undefined, port: number): Promise<ConnectDecision>;
  async #decide(
    name: string | undefined,
    address: number | undefined,
    port: number,
  ): Promise<ConnectDecision> {
    if (name === undefined) return this.#policy.checkConnection({ address: address!, port });
    if (name === EXPOSE_HOST_NAME) return this.#policy.checkConnection({ name, address: 0, port });
    const verdict = this.#policy.checkName(name);
    if (!verdict.allowed) return verdict;
    const fixed = this.#policy.addHostAddress(name);
    let candidates = fixed !== undefined ? [fixed] : this.#recall(name);
    if (candidates === undefined) {
      try {
        candidates = await withTimeout(
          this.#resolve(name),
          this.#resolveTimeout,
          `resolving ${name}`,
        );
        this.#remember(name, candidates);
      } catch {
        candidates = [];
      }
    }
    let decision: ConnectDecision = {
      allowed: false,
      reason: `cannot resolve ${name} on the host`,
    };
    for (const a of candidates) {
      decision = this.#policy.checkConnection({ name, address: a, port });
      if (decision.allowed) break;
    }
    return decision;
  }

  #block(flow: Flow, target: string, reason: string, reset: () => void): void {
    flow.decision = "blocked";
    flow.reason = reason;
    reset();
    this.#schedulePump();
    // One line per destination and reason: a second bypass of another kind still shows.
    this.#blocked(`${target} ${reason}`, `shuru: blocked ${target} (${reason})`);
    this.#finish(flow);
  }

  async #guestToHost(flow: Flow, conn: HostStream): Promise<void> {
    try {
      for (;;) {
        const data = this.stack.recv(flow.id, RELAY_CHUNK);
        if (data === null) {
          if (flow.unread) {
            await writeAll(conn, flow.unread);
            flow.bytesUp += flow.unread.length;
            flow.unread = undefined;
          }
          // The guest's FIN: half-close the host socket; the other direction continues.
          await conn.closeWrite().catch(() => {});
          break;
        }
        if (data.length === 0) {
          await flow.readable.wait();
          continue;
        }
        // The stack may owe the guest a window update now that its buffer has room.
        this.#schedulePump();
        await writeAll(conn, data);
        flow.bytesUp += data.length;
      }
    } catch (err) {
      if (!flow.closed) {
        flow.reason ??= err instanceof Error ? err.message : String(err);
        this.stack.abort(flow.id);
        this.#schedulePump();
      }
    }
    flow.upDone = true;
    if (flow.closed) this.#finish(flow);
  }

  async #hostToGuest(flow: Flow, conn: HostStream): Promise<void> {
    try {
      for (;;) {
        if (flow.closed) break;
        const capacity = this.stack.sendCapacity(flow.id);
        // Sender-side SWS avoidance: while bytes are still queued, wait for a useful amount of
        // room instead of reading the host socket a few bytes at a time.
        if (capacity === 0 || (capacity < MIN_HOST_READ && this.stack.sendQueued(flow.id) > 0)) {
          await flow.writable.wait();
          continue;
        }
        const buf = new Uint8Array(Math.min(capacity, HOST_READ_CHUNK));
        const n = await conn.read(buf);
        if (n === null) {
          // Host EOF: FIN to the guest after the queued bytes.
          this.stack.close(flow.id);
          this.#schedulePump();
          break;
        }
        if (flow.closed) break;
        const got = buf.subarray(0, n);
        const inspector = flow.inspector;
        if (inspector !== undefined) {
          // The server's answer may release guest bytes held behind an upgrade request.
          const waiting = inspector.waiting;
          inspector.observeResponse(got);
          if (waiting && !inspector.waiting) flow.readable.wake();
        }
        this.stack.send(flow.id, got);
        flow.bytesDown += n;
        this.#schedulePump();
      }
    } catch (err) {
      if (!flow.closed) {
        flow.reason ??= err instanceof Error ? err.message : String(err);
        this.stack.abort(flow.id);
        this.#schedulePump();
      }
    }
  }

  #finish(flow: Flow): void {
    if (!this.#flows.has(flow.id)) return;
    this.#flows.delete(flow.id);
    if (flow.conn) {
      try {
        flow.conn.close();
      } catch {
        // already closed
      }
    }
    flow.readable.wake();
    flow.writable.wake();
    if (!this.#onConnection) return;
    const record: ConnectionRecord = {
      time: flow.time,
      address: ipv4ToString(flow.address),
      port: flow.port,
      decision: flow.decision ?? "failed",
      bytesUp: flow.bytesUp,
      bytesDown: flow.bytesDown,
      durationMs: Math.round(performance.now() - flow.startedAt),
    };
    if (flow.name !== undefined) record.name = flow.name;
    if (flow.reason !== undefined) record.reason = flow.reason;
    this.#onConnection(record);
  }
}
