/**
 * Unit tests of the dispatcher's framing and request bookkeeping over in-memory streams. The
 * small in-process backend below exists only here, to hold a request open on demand; every
 * behaviour against a real guest agent is tested in tests/control_*_test.ts.
 */
import { assert, assertEquals, assertRejects } from "../tests/_assert.ts";
import type { ControlBackend } from "./backend.ts";
import { ControlClient } from "./client.ts";
import { ControlConnectionError, RpcError } from "./errors.ts";
import { ControlServer } from "./server.ts";

function unsupported(): never {
  throw Object.assign(new Error("not in this unit test"), { code: "UNSUPPORTED" });
}

/** A backend whose readFile waits for the test to release it. */
function heldBackend() {
  const held: Array<{ path: string; release: (b: Uint8Array) => void }> = [];
  const backend: ControlBackend = {
    spawn: unsupported,
    readFile: (path) => new Promise((resolve) => held.push({ path, release: resolve })),
    writeFile: unsupported,
    mkdir: unsupported,
    readDir: unsupported,
    stat: unsupported,
    remove: unsupported,
    rename: unsupported,
    copy: unsupported,
    chmod: unsupported,
    watch: unsupported,
  };
  return { backend, held };
}

/** A raw line client over in-memory streams, for exact wire checks. */
function rawPair(server: ControlServer) {
  const c2s = new TransformStream<Uint8Array, Uint8Array>();
  const s2c = new TransformStream<Uint8Array, Uint8Array>();
  const session = server.serve(c2s.readable, s2c.writable);
  const writer = c2s.writable.getWriter();
  const reader = s2c.readable.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  return {
    session,
    send: (text: string) => writer.write(new TextEncoder().encode(text)),
    async next(): Promise<Record<string, unknown>> {
      while (!buf.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error("closed");
        buf += value;
      }
      const i = buf.indexOf("\n");
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      return JSON.parse(line);
    },
    async close() {
      await writer.close();
      await session.done;
      await reader.cancel();
    },
  };
}

Deno.test("ControlServer - ready first, then protocol errors with their codes; the session survives", async () => {
  const { backend } = heldBackend();
  const server = new ControlServer(backend, { limits: { MAX_LINE_BYTES: 1000 } });
  const c = rawPair(server);
  assertEquals(await c.next(), { jsonrpc: "2.0", method: "ready" });

  await c.send("not json\n");
  let m = await c.next();
  assertEquals(m.id, null);
  assertEquals((m.error as { code: number }).code, -32700);

  await c.send("[1,2]\n");
  m = await c.next();
  assertEquals((m.error as { code: number }).code, -32600);

  await c.send('{"jsonrpc":"2.0","id":7,"method":"nope"}\n');
  m = await c.next();
  assertEquals(m.id, 7);
  assertEquals((m.error as { code: number; data: { kind: string } }).code, -32601);

  await c.send('{"jsonrpc":"2.0","id":"s","method":"stat","params":{"path":5}}\n');
  m = await c.next();
  assertEquals(m.id, "s");
  const e = m.error as { code: number; message: string; data: { kind: string } };
  assertEquals(e.code, -32602);
  assertEquals(e.data.kind, "EINVAL");
  assert(e.message.includes('"path"'), e.message);

  await c.send(
    `{"jsonrpc":"2.0","id":8,"method":"stat","params":{"path":"${"x".repeat(2000)}"}}\n`,
  );
  m = await c.next();
  assertEquals((m.error as { data: { kind: string } }).data.kind, "LINE_TOO_LONG");

  // A notification for an unknown method gets no answer; the next request does.
  await c.send('{"jsonrpc":"2.0","method":"nope"}\n{"jsonrpc":"2.0","id":9,"method":"ps"}\n');
  m = await c.next();
  assertEquals(m, { jsonrpc: "2.0", id: 9, result: { processes: [] } });
  await c.close();
});

Deno.test("ControlServer - requests run concurrently and answer in completion order", async () => {
  const { backend, held } = heldBackend();
  const server = new ControlServer(backend);
  const c = rawPair(server);
  await c.next();
  await c.send('{"jsonrpc":"2.0","id":1,"method":"read_file","params":{"path":"/slow"}}\n');
  await c.send('{"jsonrpc":"2.0","id":2,"method":"read_file","params":{"path":"/fast"}}\n');
  while (held.length < 2) await new Promise((r) => setTimeout(r, 1));
  held.find((h) => h.path === "/fast")!.release(new Uint8Array([104, 105]));
  const first = await c.next();
  assertEquals(first.id, 2);
  assertEquals((first.result as { content: string }).content, "aGk=");
  assertEquals(c.session.inFlightCount, 1);
  held.find((h) => h.path === "/slow")!.release(new Uint8Array());
  const second = await c.next();
  assertEquals(second.id, 1);
  assertEquals((second.result as { eof: boolean }).eof, true);
  await c.close();
});

Deno.test("ControlServer - $/cancel aborts one request; a duplicate id in flight is refused", async () => {
  const { backend, held } = heldBackend();
  const server = new ControlServer(backend);
  const c = rawPair(server);
  await c.next();
  await c.send('{"jsonrpc":"2.0","id":"a","method":"read_file","params":{"path":"/x"}}\n');
  await c.send('{"jsonrpc":"2.0","id":"a","method":"read_file","params":{"path":"/x"}}\n');
  let m = await c.next();
  assertEquals(m.id, "a");
  assertEquals((m.error as { code: number }).code, -32600);
  await c.send('{"jsonrpc":"2.0","method":"$/cancel","params":{"id":"a"}}\n');
  m = await c.next();
  assertEquals(m.id, "a");
  assertEquals((m.error as { data: { kind: string } }).data.kind, "CANCELLED");
  assertEquals(c.session.inFlightCount, 0);
  held[0]!.release(new Uint8Array());
  await c.close();
});

Deno.test("ControlClient - correlates ids, maps errors, cancels by signal, rejects pending on close", async () => {
  const { backend, held } = heldBackend();
  const server = new ControlServer(backend);
  const c2s = new TransformStream<Uint8Array, Uint8Array>();
  const s2c = new TransformStream<Uint8Array, Uint8Array>();
  const session = server.serve(c2s.readable, s2c.writable);
  const client = new ControlClient(s2c.readable, c2s.writable);
  await client.ready;

  const err = await assertRejects(() => client.request("stat", { path: "" }));
  assert(err instanceof RpcError);
  assertEquals(err.code, -32602);

  const ac = new AbortController();
  const p = client.request("read_file", { path: "/held" }, { signal: ac.signal });
  while (held.length < 1) await new Promise((r) => setTimeout(r, 1));
  ac.abort(new Error("gave up"));
  await assertRejects(() => p, "gave up");
  assertEquals(client.pendingCount, 0);
  // The server saw the $/cancel: its in-flight record is gone.
  while (session.inFlightCount > 0) await new Promise((r) => setTimeout(r, 1));

  const pending = client.request("read_file", { path: "/held2" });
  while (held.length < 2) await new Promise((r) => setTimeout(r, 1));
  await session.close();
  const closed = await assertRejects(() => pending);
  assert(closed instanceof ControlConnectionError);
  assertEquals(closed.code, "CLOSED");
  await client.close();
  for (const h of held) h.release(new Uint8Array());
});
