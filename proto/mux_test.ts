import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { withDeadline } from "../tests/_deadline.ts";
import { muxPair, readAll, unixPair } from "./_test_utils.ts";
import { DEFAULT_WINDOW, FrameType, HELLO_MAGIC, PROTOCOL_VERSION } from "./constants.ts";
import { AgentError, ConnectionError, NotFoundError } from "./errors.ts";
import { decodeJson, encodeFrame, encodeJson, type Frame, FrameDecoder } from "./frame.ts";
import { Mux } from "./mux.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function helloFrame(role: "host" | "guest", extra: Record<string, unknown> = {}): Uint8Array {
  return encodeFrame({
    type: FrameType.HELLO,
    flags: 0,
    channel: 0,
    stream: 0,
    payload: encodeJson({
      magic: HELLO_MAGIC,
      protocol: PROTOCOL_VERSION,
      role,
      version: "raw",
      capabilities: [],
      window: 64 * 1024,
      maxFrame: 64 * 1024,
      ...extra,
    }),
  });
}

function frame(type: FrameType, stream: number, payload: Uint8Array, channel = 0, flags = 0) {
  return encodeFrame({ type, flags, channel, stream, payload });
}

/** Reads frames from a raw conn until `pred` matches (or EOF). */
async function readUntil(conn: Deno.Conn, pred: (f: Frame) => boolean): Promise<Frame | undefined> {
  const d = new FrameDecoder();
  const buf = new Uint8Array(65536);
  while (true) {
    let f;
    while ((f = d.next())) if (pred(f)) return f;
    const n = await conn.read(buf);
    if (n === null) return undefined;
    d.push(buf.slice(0, n));
  }
}

Deno.test("Mux - HELLO exchange and PING", async () => {
  await using p = await muxPair({ guest: { capabilities: ["exec"] } });
  assertEquals(p.host.peer.role, "guest");
  assertEquals(p.host.peer.capabilities, ["exec"]);
  assertEquals(p.guest.peer.version, "test-host");
  const rtt = await p.host.ping();
  assert(rtt >= 0 && rtt < 5000);
  await p.guest.ping();
});

Deno.test("Mux - request, data, FIN and CLOSE result", async () => {
  await using p = await muxPair();
  const served = (async () => {
    const s = (await p.guest.accept())!;
    assertEquals(s.request, { op: "greet", name: "x" });
    const w = s.writable.getWriter();
    await w.write(enc.encode("hello "));
    await w.write(enc.encode("world"));
    await w.close();
    await s.close({ ok: true });
  })();
  const s = p.host.open({ op: "greet", name: "x" });
  assertEquals(s.id, 1);
  assertEquals(dec.decode(await readAll(s.readable)), "hello world");
  assertEquals(await s.result, { ok: true });
  await served;
  assertEquals(p.host.streamCount, 0);
  assertEquals(p.guest.streamCount, 0);
});

Deno.test("Mux - echo with half-close on both sides and separate channels", async () => {
  await using p = await muxPair();
  const served = (async () => {
    for await (const s of p.guest) {
      const input = await readAll(s.channel(0).readable);
      const out = s.channel(1).writable.getWriter();
      const err = s.channel(2).writable.getWriter();
      await out.write(input);
      await err.write(enc.encode(`got ${input.length}`));
      await out.close();
      await err.close();
      await s.close({ n: input.length });
      return;
    }
  })();
  const s = p.host.open({ op: "echo" });
  const data = crypto.getRandomValues(new Uint8Array(60_000));
  const writing = (async () => {
    const w = s.channel(0).writable.getWriter();
    await w.write(data);
    await w.close();
  })();
  const [out, err] = await Promise.all([
    readAll(s.channel(1).readable),
    readAll(s.channel(2).readable),
  ]);
  await writing;
  assertEquals(out, data);
  assertEquals(dec.decode(err), "got 60000");
  assertEquals(await s.result, { n: 60000 });
  await served;
});

Deno.test("Mux - messages both ways", async () => {
  await using p = await muxPair();
  const served = (async () => {
    const s = (await p.guest.accept())!;
    await s.send({ type: "started", pid: 42 });
    const m = await s.nextMessage();
    await s.close({ echoed: m });
  })();
  const s = p.host.open({ op: "x" });
  assertEquals(await s.nextMessage(), { type: "started", pid: 42 });
  await s.send({ type: "resize", rows: 1, cols: 2 });
  assertEquals(await s.result, { echoed: { type: "resize", rows: 1, cols: 2 } });
  assertEquals(await s.nextMessage(), undefined);
  await served;
});

Deno.test("Mux - a slow reader bounds the receiver's buffer to the window", async () => {
  const window = 256 * 1024;
  await using p = await muxPair({ host: { window } });
  const total = 16 * 1024 * 1024;
  let written = 0;
  const served = (async () => {
    const s = (await p.guest.accept())!;
    const w = s.channel(1).writable.getWriter();
    const chunk = new Uint8Array(64 * 1024);
    while (written < total) {
      await w.write(chunk);
      written += chunk.length;
    }
    await w.close();
    await s.close();
  })();
  const s = p.host.open({ op: "flood" });
  const ch = s.channel(1);
  await new Promise((r) => setTimeout(r, 200));
  // The sender is stuck on credit; the receiver holds at most one window.
  assert(ch.bufferedBytes <= window, `buffered ${ch.bufferedBytes} > window ${window}`);
  assert(written <= window + 64 * 1024, `sender wrote ${written} without credit`);
  const got = await readAll(ch.readable);
  assertEquals(got.length, total);
  await served;
});

Deno.test("Mux - a stalled stream does not block another", async () => {
  await using p = await muxPair({ host: { window: 64 * 1024 } });
  const served = (async () => {
    for await (const s of p.guest) {
      void (async () => {
        const n = Number(s.request.bytes);
        const w = s.writable.getWriter();
        await w.write(new Uint8Array(n)).catch(() => {});
        await w.close().catch(() => {});
        await s.close().catch(() => {});
      })();
    }
  })();
  const stalled = p.host.open({ bytes: 10 * 1024 * 1024 });
  await new Promise((r) => setTimeout(r, 50));
  const other = p.host.open({ bytes: 4 * 1024 * 1024 });
  const got = await readAll(other.readable);
  assertEquals(got.length, 4 * 1024 * 1024);
  assertEquals(stalled.finished, false);
  stalled.reset({ code: "cancelled", message: "test done" });
  await p.host.close();
  await served;
});

Deno.test("Mux - RESET from the accepting side rejects result with the typed error", async () => {
  await using p = await muxPair();
  void (async () => {
    const s = (await p.guest.accept())!;
    s.reset({ code: "not_found", message: "Cannot open /nope: no such file" });
  })();
  const s = p.host.open({ op: "read_file", path: "/nope" });
  const err = await assertRejects(() => s.result, "no such file");
  assert(err instanceof NotFoundError);
  await assertRejects(() => readAll(s.readable), "no such file");
});

Deno.test("Mux - RESET from the opener aborts the accepting side's signal and writes", async () => {
  await using p = await muxPair({ host: { window: 4096 } });
  const accepted = Promise.withResolvers<void>();
  const served = (async () => {
    const s = (await p.guest.accept())!;
    accepted.resolve();
    const w = s.writable.getWriter();
    const writing = w.write(new Uint8Array(1 << 20));
    await new Promise((resolve) => s.signal.addEventListener("abort", resolve));
    assert(s.signal.reason instanceof AgentError);
    assertEquals((s.signal.reason as AgentError).code, "cancelled");
    await assertRejects(() => writing, "stop");
  })();
  const s = p.host.open({ op: "x" });
  await accepted.promise;
  s.reset({ code: "cancelled", message: "stop" });
  await served;
  await p.host.ping(); // the connection is still fine
});

Deno.test("Mux - frames in flight for a finished stream are ignored", async () => {
  await using p = await muxPair();
  void (async () => {
    const s = (await p.guest.accept())!;
    await s.close({ early: true });
  })();
  const s = p.host.open({ op: "x" });
  const w = s.writable.getWriter();
  // Keep writing while CLOSE is in flight; the writes then fail locally, the link stays up.
  const writing = (async () => {
    for (let i = 0; i < 100; i++) await w.write(new Uint8Array(16 * 1024));
  })();
  assertEquals(await s.result, { early: true });
  await assertRejects(() => writing, "finished");
  await p.guest.ping();
  await p.host.ping();
});

Deno.test("Mux - closing the connection fails open streams", async () => {
  await using p = await muxPair();
  const s = p.host.open({ op: "x" });
  await p.guest.accept();
  await p.guest.close();
  const err = await assertRejects(() => s.result);
  assert(err instanceof ConnectionError);
  assertEquals((await p.host.closed)?.code, "closed");
  assertEquals(await p.guest.closed, undefined);
});

Deno.test("Mux - the accepting side resets streams over maxStreams with busy", async () => {
  await using p = await muxPair({ guest: { maxStreams: 2 } });
  const a = p.host.open({ n: 1 });
  const b = p.host.open({ n: 2 });
  const c = p.host.open({ n: 3 });
  const err = await assertRejects(() => c.result, "2 streams already open");
  assertEquals((err as AgentError).code, "busy");
  assertEquals(a.finished || b.finished, false);
});

Deno.test("Mux - garbage after HELLO ends the connection with a clear error and GOAWAY", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  await pair.b.write(enc.encode("\x42garbage that is not a frame"));
  const err = await guest.closed;
  assertEquals(err?.code, "malformed");
  assert(err!.message.includes("unknown frame type 0x42"), err!.message);
  const goaway = await readUntil(pair.b, (f) => f.type === FrameType.GOAWAY);
  assert(goaway, "expected a GOAWAY frame");
  const body = decodeJson(goaway.payload, goaway.type);
  assertEquals(body.code, "protocol");
  assert(String(body.message).includes("unknown frame type"));
});

Deno.test("Mux - a truncated frame at EOF is reported as truncated", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  const open = frame(FrameType.OPEN, 1, encodeJson({ op: "x" }));
  await pair.b.write(open.subarray(0, open.length - 3));
  await pair.b.closeWrite();
  const err = await guest.closed;
  assertEquals(err?.code, "truncated");
  assert(err!.message.includes("OPEN frame"), err!.message);
});

Deno.test("Mux - DATA beyond the granted window is a flow-control error", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g", window: 4096 });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  await pair.b.write(frame(FrameType.OPEN, 1, encodeJson({ op: "x" })));
  await pair.b.write(frame(FrameType.DATA, 1, new Uint8Array(4096)));
  await pair.b.write(frame(FrameType.DATA, 1, new Uint8Array(1)));
  const err = await guest.closed;
  assertEquals(err?.code, "flow_control");
});

Deno.test("Mux - a frame for a never-opened stream is malformed", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  await pair.b.write(frame(FrameType.DATA, 7, new Uint8Array(3)));
  const err = await guest.closed;
  assertEquals(err?.code, "malformed");
  assert(err!.message.includes("unknown stream 7"), err!.message);
});

Deno.test("Mux - OPEN with the wrong parity or a reused id is malformed", async () => {
  for (const ids of [[2], [3, 1], [5, 5]]) {
    await using pair = await unixPair();
    const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
    await pair.b.write(helloFrame("host"));
    const guest = await guestP;
    for (const id of ids) await pair.b.write(frame(FrameType.OPEN, id, encodeJson({})));
    const err = await guest.closed;
    assertEquals(err?.code, "malformed", `ids ${ids}`);
  }
});

Deno.test("Mux - HELLO with another protocol version is refused", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("host", { protocol: PROTOCOL_VERSION + 1 }));
  const err = await assertRejects(() => guestP, "protocol 2");
  assertEquals((err as ConnectionError).code, "handshake");
});

Deno.test("Mux - a first frame that is not HELLO is refused", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(frame(FrameType.OPEN, 1, encodeJson({})));
  const err = await assertRejects(() => guestP, "expected HELLO");
  assertEquals((err as ConnectionError).code, "handshake");
});

Deno.test("Mux - handshake deadline via signal", async () => {
  await using pair = await unixPair();
  const err = await assertRejects(
    () => Mux.connect(pair.a, { role: "guest", version: "g", signal: AbortSignal.timeout(50) }),
    "no HELLO",
  );
  assertEquals((err as ConnectionError).code, "handshake");
});

Deno.test("Mux - two roles that are the same are refused", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("guest"));
  await assertRejects(() => guestP, "expected host");
});

Deno.test("Mux - cancelling a readable returns credit so the sender finishes", async () => {
  await using p = await muxPair({ host: { window: 8192 } });
  const served = (async () => {
    const s = (await p.guest.accept())!;
    const w = s.writable.getWriter();
    await w.write(new Uint8Array(1 << 20));
    await w.close();
    await s.close({ done: true });
  })();
  const s = p.host.open({});
  await s.readable.cancel();
  assertEquals(await s.result, { done: true });
  await served;
  assertEquals(DEFAULT_WINDOW > 0, true);
});

Deno.test("Mux - bytes on channels the opener does not read are dropped and credited", async () => {
  await using p = await muxPair({ host: { window: 4096 } });
  const served = (async () => {
    const s = (await p.guest.accept())!;
    // Far more than the window on channel 3, which the host said it will not read.
    const w3 = s.channel(3).writable.getWriter();
    for (let i = 0; i < 64; i++) await w3.write(new Uint8Array(4096));
    await w3.close();
    const w1 = s.channel(1).writable.getWriter();
    await w1.write(enc.encode("wanted"));
    await w1.close();
    await s.close();
  })();
  const s = p.host.open({}, { reads: [1] });
  assertEquals(dec.decode(await readAll(s.channel(1).readable)), "wanted");
  assertEquals(s.channel(3).bufferedBytes, 0);
  await served;
  await p.host.ping();
});

Deno.test("Mux - maxStreams 0 refuses every stream the peer opens", async () => {
  await using p = await muxPair({ host: { maxStreams: 0 } });
  const s = p.guest.open({ op: "x" });
  const err = await assertRejects(() => s.result, "0 streams already open");
  assertEquals((err as AgentError).code, "busy");
});

Deno.test("Mux - onMessage delivers messages in wire order relative to DATA", async () => {
  await using p = await muxPair();
  const log: string[] = [];
  const served = (async () => {
    const s = (await p.guest.accept())!;
    const reader = s.readable.getReader();
    s.onMessage((m) => log.push(`message ${m.n}`));
    for (let i = 0; i < 3; i++) {
      const { value } = await reader.read();
      log.push(`data ${dec.decode(value)}`);
    }
    await s.close();
  })();
  const s = p.host.open({});
  const w = s.writable.getWriter();
  await s.send({ n: 1 });
  await w.write(enc.encode("a"));
  await s.send({ n: 2 });
  await w.write(enc.encode("b"));
  await w.write(enc.encode("c"));
  await s.result;
  await served;
  assertEquals(log.indexOf("message 1") < log.indexOf("data a"), true);
  assertEquals(log.indexOf("message 2") < log.indexOf("data b"), true);
});

Deno.test("Mux - a peer that floods PINGs without reading is dropped (limit)", async () => {
  await using pair = await unixPair();
  const guestP = Mux.connect(pair.a, { role: "guest", version: "g" });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  const ping = frame(FrameType.PING, 0, new Uint8Array(8));
  const burst = new Uint8Array(ping.length * 50_000);
  for (let i = 0; i < 50_000; i++) burst.set(ping, i * ping.length);
  // ~1M PINGs (20 MiB of owed ACKs) while never reading a byte.
  const flooding = (async () => {
    for (let i = 0; i < 20; i++) {
      let rest = burst.subarray(0);
      while (rest.length > 0) rest = rest.subarray(await pair.b.write(rest));
    }
  })().catch(() => {});
  const err = await guest.closed;
  assertEquals(err?.code, "limit");
  await flooding;
});

Deno.test("Mux - many tiny writes on many streams wait instead of tripping the limits", async () => {
  await using p = await muxPair();
  const served = (async () => {
    const streams = [];
    for (let i = 0; i < 10; i++) streams.push((await p.guest.accept())!);
    await Promise.all(streams.map(async (s) => {
      const n = (await readAll(s.readable)).length;
      await s.close({ n });
    }));
  })();
  const results = await Promise.all(Array.from({ length: 10 }, async () => {
    const s = p.host.open({});
    const w = s.writable.getWriter();
    const one = new Uint8Array([1]);
    const writes = [];
    for (let i = 0; i < 10_000; i++) writes.push(w.write(one));
    await Promise.all(writes);
    await w.close();
    return (await s.result).n;
  }));
  assertEquals(results, Array(10).fill(10_000));
  await served;
});

Deno.test("Mux - a shutdown stuck on a peer that does not read is bounded by the sleep option", async () => {
  await using pair = await unixPair();
  const sleeps: number[] = [];
  const guestP = Mux.connect(pair.a, {
    role: "guest",
    version: "g",
    // Ends the wait at once: the default would hold the stuck shutdown for 2 s.
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
  });
  await pair.b.write(helloFrame("host"));
  const guest = await guestP;
  const ping = frame(FrameType.PING, 0, new Uint8Array(8));
  const burst = new Uint8Array(ping.length * 50_000);
  for (let i = 0; i < 50_000; i++) burst.set(ping, i * ping.length);
  const flooding = (async () => {
    for (let i = 0; i < 20; i++) {
      let rest = burst.subarray(0);
      while (rest.length > 0) rest = rest.subarray(await pair.b.write(rest));
    }
  })().catch(() => {});
  // The sleep returns at once, so only a wait on something else (the peer never reads) could
  // hold the shutdown: that shows as the deadline, whatever the machine's speed.
  const closed = await withDeadline(guest.closed, 60_000, "the shutdown after the limit");
  assertEquals(closed?.code, "limit");
  assertEquals(sleeps, [2000]);
  await flooding;
});
