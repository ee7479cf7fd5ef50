/**
 * A deliberately low-level NBD client for tests: it can do a proper fixed-newstyle handshake,
 * then send any bytes at all (bad magics, out-of-range requests, unknown commands) and parse
 * whatever comes back. It is the hostile peer; real clients (qemu-io, nbdcopy) cover the rest.
 *
 * @module
 */

import {
  ClientFlag,
  encodeRequest,
  Magic,
  Option,
  OptionReply,
  optionReplyName,
  ReplyType,
} from "../../nbd/mod.ts";
import { concatBytes } from "../../io/mod.ts";

/** One reply (a simple reply, or one structured chunk). */
export interface Reply {
  /** "simple" or "structured". */
  kind: "simple" | "structured";
  /** Cookie as a number (we only use small cookies). */
  cookie: number;
  /** Error value (simple reply, or error chunk); 0 for success. */
  error: number;
  /** Structured chunk type. */
  type?: number;
  /** Structured chunk flags. */
  flags?: number;
  /** Payload: read data (simple READ), or the structured chunk payload. */
  data: Uint8Array;
}

/** Options of {@linkcode RawClient.handshake}. */
export interface HandshakeOptions {
  /** Export to ask for. @default "" */
  exportName?: string;
  /** Negotiate structured replies. */
  structured?: boolean;
  /** Select `base:allocation` (needs `structured`). */
  baseAllocation?: boolean;
}

/** Raw NBD client over a Unix socket. */
export class RawClient {
  #conn: Deno.UnixConn;
  #buf = new Uint8Array(0);
  /** Transmission flags from NBD_OPT_GO. */
  flags = 0;
  /** Export size from NBD_OPT_GO. */
  size = 0;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /** Connects to `path`. */
  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path }));
  }

  /** Sends raw bytes. */
  async send(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
  }

  /** Reads exactly `n` bytes, or returns `null` if the server closed the connection first. */
  async readExact(n: number): Promise<Uint8Array | null> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(Math.max(65536, n - this.#buf.length));
      let k: number | null;
      try {
        k = await this.#conn.read(chunk);
      } catch {
        k = null; // reset by peer counts as closed
      }
      if (k === null) return null;
      const next = new Uint8Array(this.#buf.length + k);
      next.set(this.#buf);
      next.set(chunk.subarray(0, k), this.#buf.length);
      this.#buf = next;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  async #must(n: number): Promise<Uint8Array> {
    const b = await this.readExact(n);
    if (b === null) throw new Error(`server closed the connection (wanted ${n} bytes)`);
    return b;
  }

  /** Resolves `true` if the server closes the connection (reads until EOF). */
  async closedByServer(): Promise<boolean> {
    while (true) {
      const b = await this.readExact(1);
      if (b === null) return true;
    }
  }

  /** Reads the greeting and sends client flags. */
  async greet(): Promise<void> {
    const g = new DataView((await this.#must(18)).buffer);
    if (g.getBigUint64(0) !== Magic.NBDMAGIC || g.getBigUint64(8) !== Magic.IHAVEOPT) {
      throw new Error("bad greeting");
    }
    const flags = new Uint8Array(4);
    new DataView(flags.buffer).setUint32(0, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES);
    await this.send(flags);
  }

  /** Sends one option. */
  async option(opt: number, data: Uint8Array = new Uint8Array()): Promise<void> {
    const h = new Uint8Array(16);
    const v = new DataView(h.buffer);
    v.setBigUint64(0, Magic.IHAVEOPT);
    v.setUint32(8, opt);
    v.setUint32(12, data.length);
    await this.send(h);
    await this.send(data);
  }

  /** Reads one option reply. */
  async optionReply(): Promise<{ option: number; type: number; data: Uint8Array }> {
    const v = new DataView((await this.#must(20)).buffer);
    if (v.getBigUint64(0) !== Magic.OPTION_REPLY) throw new Error("bad option reply magic");
    const len = v.getUint32(16);
    return { option: v.getUint32(8), type: v.getUint32(12), data: await this.#must(len) };
  }

  async #expectAck(what: string): Promise<void> {
    const r = await this.optionReply();
    if (r.type !== OptionReply.ACK) throw new Error(`${what}: got ${optionReplyName(r.type)}`);
  }

  /** Greets and negotiates up to NBD_OPT_GO. */
  async handshake(opts: HandshakeOptions = {}): Promise<void> {
    await this.greet();
    const enc = new TextEncoder();
    const name = enc.encode(opts.exportName ?? "");
    if (opts.structured) {
      await this.option(Option.STRUCTURED_REPLY);
      await this.#expectAck("NBD_OPT_STRUCTURED_REPLY");
    }
    if (opts.baseAllocation) {
      const q = enc.encode("base:allocation");
      const d = new Uint8Array(4 + name.length + 4 + 4 + q.length);
      const v = new DataView(d.buffer);
      v.setUint32(0, name.length);
      d.set(name, 4);
      v.setUint32(4 + name.length, 1);
      v.setUint32(8 + name.length, q.length);
      d.set(q, 12 + name.length);
      await this.option(Option.SET_META_CONTEXT, d);
      const r = await this.optionReply();
      if (r.type !== OptionReply.META_CONTEXT) throw new Error("base:allocation refused");
      await this.#expectAck("NBD_OPT_SET_META_CONTEXT");
    }
    const go = new Uint8Array(4 + name.length + 2);
    new DataView(go.buffer).setUint32(0, name.length);
    go.set(name, 4);
    await this.option(Option.GO, go);
    while (true) {
      const r = await this.optionReply();
      if (r.type === OptionReply.ACK) break;
      if (r.type !== OptionReply.INFO) throw new Error(`NBD_OPT_GO: ${optionReplyName(r.type)}`);
      const v = new DataView(r.data.buffer);
      if (v.getUint16(0) === 0) {
        this.size = Number(v.getBigUint64(2));
        this.flags = v.getUint16(10);
      }
    }
  }

  /** Sends one request (plus `payload` for writes, which may differ from `length`). */
  async request(
    r: { type: number; offset: number; length: number; flags?: number; cookie: number },
    payload?: Uint8Array,
  ): Promise<void> {
    const cookie = new Uint8Array(8);
    new DataView(cookie.buffer).setBigUint64(0, BigInt(r.cookie));
    const h = encodeRequest({
      type: r.type,
      offset: r.offset,
      length: r.length,
      flags: r.flags ?? 0,
      cookie,
    });
    await this.send(payload ? concatBytes([h, payload]) : h);
  }

  /**
   * Reads one reply. For a simple reply, `readLength` says how many data bytes follow a
   * successful READ (the protocol gives no length in the reply itself).
   */
  async reply(readLength = 0): Promise<Reply> {
    const head = await this.#must(4);
    const magic = new DataView(head.buffer).getUint32(0);
    if (magic === Magic.SIMPLE_REPLY) {
      const v = new DataView((await this.#must(12)).buffer);
      const error = v.getUint32(0);
      const cookie = Number(v.getBigUint64(4));
      const data = error === 0 && readLength > 0 ? await this.#must(readLength) : new Uint8Array();
      return { kind: "simple", cookie, error, data };
    }
    if (magic === Magic.STRUCTURED_REPLY) {
      const v = new DataView((await this.#must(16)).buffer);
      const flags = v.getUint16(0);
      const type = v.getUint16(2);
      const cookie = Number(v.getBigUint64(4));
      const data = await this.#must(v.getUint32(12));
      const error = (type & 0x8000) !== 0 ? new DataView(data.buffer).getUint32(0) : 0;
      return { kind: "structured", cookie, error, type, flags, data };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** READ and return the data (structured OFFSET_DATA or simple). */
  async read(offset: number, length: number, cookie = 1): Promise<Reply> {
    await this.request({ type: 0, offset, length, cookie });
    const r = await this.reply(length);
    if (r.kind === "structured" && r.type === ReplyType.OFFSET_DATA) {
      return { ...r, data: r.data.subarray(8) };
    }
    return r;
  }

  /** Closes the socket. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}
