/**
 * Test helper: a guest made of frames, for driving a real {@linkcode Relay} in process. An
 * in-memory {@linkcode FrameLink} connects it to the relay; the guest asks our DNS server and
 * opens TCP connections with just enough TCP to talk to our stack over a lossless link (every
 * segment acknowledged at once, no retransmission). Waits are event-driven with a deadline.
 *
 * @module
 */

import type { FrameLink } from "./link.ts";
import { guestTcp, guestUdp, parseOutput } from "./_test_utils.ts";
import { buildDnsQuery, DnsType, parseDnsMessage, rcodeOf } from "./dns/mod.ts";
import { parseIpv4 } from "./wire/address.ts";
import { TcpFlag } from "./wire/constants.ts";

const DNS_SERVER = parseIpv4("10.0.2.3");
/** Payload bytes per guest segment (below the stack's default MSS). */
const SEGMENT = 1400;

/** Frames between the guest and the relay, in memory. */
class MemoryLink implements FrameLink {
  readonly #toRelay: Uint8Array[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  constructor(readonly deliver: (frame: Uint8Array) => void) {}

  /** The guest sends a frame to the relay. */
  fromGuest(frame: Uint8Array): void {
    this.#toRelay.push(frame);
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async receive(): Promise<Uint8Array[] | null> {
    while (this.#toRelay.length === 0 && !this.#closed) {
      await new Promise<void>((r) => this.#wake = r);
    }
    if (this.#closed) return null;
    return this.#toRelay.splice(0);
  }

  send(frame: Uint8Array): boolean {
    // Delivered after the relay's dispatch returns, like a real link.
    const copy = frame.slice();
    queueMicrotask(() => this.deliver(copy));
    return true;
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {
    this.#closed = true;
    this.#wake?.();
  }
}

/** Resolves when `ready()` holds, checked after every change; rejects after `ms`. */
class Waiters {
  #list: Array<() => void> = [];
  notify(): void {
    for (const w of this.#list.splice(0)) w();
  }
  async until(ready: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = performance.now() + ms;
    while (!ready()) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#list.push(r);
        timer = setTimeout(r, Math.min(left, 100));
      });
      clearTimeout(timer);
    }
  }
}

/** One guest TCP connection. */
export class GuestSocket {
  /** Where the connection stands. */
  state: "syn-sent" | "open" | "reset" | "closed" = "syn-sent";
  /** The peer sent FIN. */
  finReceived = false;
  #received: number[] = [];
  #seq = 1000;
  #ack = 0;
  constructor(
    readonly guest: TestGuest,
    readonly address: number,
    readonly port: number,
    readonly localPort: number,
  ) {}

  /** Everything received so far, as text. */
  get text(): string {
    return new TextDecoder().decode(new Uint8Array(this.#received));
  }

  /** Waits until the handshake finished ("open") or the connection was refused ("reset"). */
  async opened(): Promise<"open" | "reset"> {
    await this.guest.waiters.until(() => this.state !== "syn-sent", "the SYN-ACK");
    return this.state === "reset" ? "reset" : "open";
  }

  /** Waits until the received text satisfies `ready` (or the connection ends: then throws). */
  async receive(ready: (text: string) => boolean, what: string): Promise<string> {
    await this.guest.waiters.until(
      () => ready(this.text) || this.state === "reset" || this.finReceived,
      what,
    );
    if (!ready(this.text)) {
      throw new Error(`Connection ended (${this.state}) before ${what}; got ${this.text}`);
    }
    return this.text;
  }

  /** Waits until the relay reset the connection. */
  async reset(): Promise<void> {
    await this.guest.waiters.until(() => this.state === "reset", "a reset");
  }

  /** Sends bytes, in segments. */
  write(data: Uint8Array | string): void {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let off = 0; off < bytes.length; off += SEGMENT) {
      const payload = bytes.slice(off, off + SEGMENT);
      this.#segment(TcpFlag.ACK | TcpFlag.PSH, payload);
      this.#seq = (this.#seq + payload.length) >>> 0;
    }
  }

  /** Sends FIN. */
  fin(): void {
    this.#segment(TcpFlag.ACK | TcpFlag.FIN, new Uint8Array(0));
    this.#seq = (this.#seq + 1) >>> 0;
  }

  /** Sends the SYN. */
  syn(): void {
    this.#segment(TcpFlag.SYN, new Uint8Array(0), { maxSegmentSize: 1460 });
    this.#seq = (this.#seq + 1) >>> 0;
  }

  #segment(flags: number, payload: Uint8Array, options = {}): void {
    this.guest.link.fromGuest(guestTcp(this.address, {
      sourcePort: this.localPort,
      destinationPort: this.port,
      sequence: this.#seq,
      acknowledgment: this.#ack,
      flags,
      window: 65535,
      options,
      payload,
    }));
  }

  /** A segment from the stack for this connection. */
  handle(seg: { sequence: number; flags: number; payload: Uint8Array }): void {
    if (seg.flags & TcpFlag.RST) {
      this.state = "reset";
      return;
    }
    if (this.state === "syn-sent" && (seg.flags & TcpFlag.SYN)) {
      this.#ack = (seg.sequence + 1) >>> 0;
      this.state = "open";
      this.#segment(TcpFlag.ACK, new Uint8Array(0));
      return;
    }
    let advanced = false;
    if (seg.payload.length > 0 && seg.sequence === this.#ack) {
      this.#received.push(...seg.payload);
      this.#ack = (this.#ack + seg.payload.length) >>> 0;
      advanced = true;
    }
    if ((seg.flags & TcpFlag.FIN) && (seg.sequence + seg.payload.length) >>> 0 === this.#ack) {
      this.#ack = (this.#ack + 1) >>> 0;
      this.finReceived = true;
      advanced = true;
    }
    if (advanced || seg.payload.length > 0) this.#segment(TcpFlag.ACK, new Uint8Array(0));
  }
}

/** The guest: DNS lookups and TCP connections through a relay's link. */
export class TestGuest {
  /** The relay's end of the link. */
  readonly link: MemoryLink;
  /** Wakes every wait on any frame. */
  readonly waiters = new Waiters();
  readonly #sockets = new Map<number, GuestSocket>();
  readonly #dnsAnswers = new Map<number, { rcode: number; addresses: number[] }>();
  #nextPort = 40000;
  #nextDnsId = 1;

  constructor() {
    this.link = new MemoryLink((frame) => this.#deliver(frame));
  }

  #deliver(frame: Uint8Array): void {
    const parsed = parseOutput(frame);
    if (parsed.kind === "tcp") {
      this.#sockets.get(parsed.tcp.destinationPort)?.handle(parsed.tcp);
    } else if (parsed.kind === "udp" && parsed.udp.sourcePort === 53) {
      const msg = parseDnsMessage(parsed.udp.payload);
      this.#dnsAnswers.set(msg.id, {
        rcode: rcodeOf(msg),
        addresses: msg.answers.filter((a) => a.type === DnsType.A && a.data.length === 4).map(
          (a) => new DataView(a.data.buffer, a.data.byteOffset).getUint32(0),
        ),
      });
    }
    this.waiters.notify();
  }

  /** Asks our DNS server for `name`'s A record: the rcode and the addresses. */
  async resolve(name: string): Promise<{ rcode: number; addresses: number[] }> {
    const id = this.#nextDnsId++;
    this.link.fromGuest(guestUdp(DNS_SERVER, {
      sourcePort: 33000 + id,
      destinationPort: 53,
      payload: buildDnsQuery(name, { id, type: DnsType.A }),
    }));
    await this.waiters.until(() => this.#dnsAnswers.has(id), `the DNS answer for ${name}`);
    return this.#dnsAnswers.get(id)!;
  }

  /** Opens a connection to `address:port` (SYN sent; await `opened()`). */
  connect(address: number, port: number): GuestSocket {
    const s = new GuestSocket(this, address, port, this.#nextPort++);
    this.#sockets.set(s.localPort, s);
    s.syn();
    return s;
  }
}
