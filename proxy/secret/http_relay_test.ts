/**
 * The relay between real peers: curl (or a raw socket) as the guest, a Deno HTTP server (or a
 * raw socket server) as the upstream, both on 127.0.0.1 port 0.
 */

import zlib from "node:zlib";
import { assert, assertEquals } from "../../tests/assert.ts";
import { type HttpSecretRelayOptions, type HttpSecretRelayStats, relayHttpWithSecrets } from "./http_relay.ts";

const VALUE = "sk-REAL-4f8e2a9c1b7d";
const PLACEHOLDER = "PH-shuru-0123456789abcdef";
const OTHER_VALUE = "other-real-value-9z";
const OTHER_PLACEHOLDER = "PH-shuru-other-77";
const OPTIONS: HttpSecretRelayOptions = {
  inject: [{ placeholder: PLACEHOLDER, value: VALUE }],
  scrub: [{ placeholder: PLACEHOLDER, value: VALUE }, { placeholder: OTHER_PLACEHOLDER, value: OTHER_VALUE }],
};
const enc = new TextEncoder();
const dec = new TextDecoder();

/** What the upstream saw of one request. */
interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** A Deno.serve upstream recording requests; routes answer with bodies holding the secret value. */
function startUpstream(): { port: number; seen: Seen[]; close: () => Promise<void> } {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const body = await req.text();
    const record: Seen = { method: req.method, url: req.url, headers: Object.fromEntries(req.headers), body };
    seen.push(record);
    const echo = enc.encode(JSON.stringify(record));
    const secretText = enc.encode(`the key is ${VALUE}; again ${VALUE}; other ${OTHER_VALUE}\n`.repeat(200));
    switch (url.pathname) {
      case "/echo":
        return new Response(echo, { headers: { "content-type": "application/json" } });
      case "/gzip":
        return new Response(zlib.gzipSync(secretText), {
          headers: { "content-type": "text/plain", "content-encoding": "gzip" },
        });
      case "/br":
        return new Response(zlib.brotliCompressSync(secretText), {
          headers: { "content-type": "text/plain", "content-encoding": "br" },
        });
      case "/deflate":
        return new Response(zlib.deflateSync(secretText), {
          headers: { "content-type": "text/plain", "content-encoding": "deflate" },
        });
      case "/chunked": {
        // A stream body makes Deno.serve answer chunked; cut the value across chunk boundaries.
        const pieces = [`a ${VALUE.slice(0, 5)}`, `${VALUE.slice(5, 9)}`, `${VALUE.slice(9)} b\n`];
        const stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const piece = pieces.shift();
            if (piece === undefined) return controller.close();
            await new Promise((r) => setTimeout(r, 5));
            controller.enqueue(enc.encode(piece));
          },
        });
        return new Response(stream, { headers: { "content-type": "application/octet-stream" } });
      }
      case "/header":
        return new Response("ok\n", { headers: { "x-leak": `token=${VALUE}`, "content-type": "text/plain" } });
      case "/zstd":
        return new Response("whatever", { headers: { "content-encoding": "zstd" } });
      default:
        return new Response("not found\n", { status: 404 });
    }
  });
  const port = server.addr.port;
  return { port, seen, close: () => server.shutdown() };
}

/** A raw TCP upstream: `handle` gets each connection. */
function startRawUpstream(handle: (conn: Deno.TcpConn) => Promise<void>): { port: number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      running.push(handle(conn).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch { /* closed by the handler */ }
      }));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(running);
    },
  };
}

/** The relay as the terminator will run it: one upstream connection per guest connection. */
function startRelay(upstreamPort: number, options: HttpSecretRelayOptions = OPTIONS) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relays: Promise<HttpSecretRelayStats>[] = [];
  const accepting = (async () => {
    for await (const client of listener) {
      const upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
      relays.push(relayHttpWithSecrets(client, upstream, options));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    relays,
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      return await Promise.all(relays);
    },
  };
}

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("curl", { args: ["-sS", "--max-time", "20", ...args], stdout: "piped", stderr: "piped" })
      .output();
  } catch (e) {
    throw new Error("curl is missing: apt-get install curl", { cause: e });
  }
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `fn` with a recording upstream and a relay in front of it, then cleans both up. */
async function withRelay(
  fn: (relayUrl: string, seen: Seen[]) => Promise<void>,
  options?: HttpSecretRelayOptions,
): Promise<HttpSecretRelayStats[]> {
  const upstream = startUpstream();
  const relay = startRelay(upstream.port, options);
  try {
    await fn(`http://127.0.0.1:${relay.port}`, upstream.seen);
  } finally {
    var stats = await relay.close();
    await upstream.close();
  }
  return stats;
}

Deno.test("relayHttpWithSecrets - placeholder in a header reaches upstream as the value, echo comes back scrubbed", async () => {
  await withRelay(async (url, seen) => {
    const res = await curl(["-H", `Authorization: Bearer ${PLACEHOLDER}`, `${url}/echo`]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(seen[0]!.headers["authorization"], `Bearer ${VALUE}`);
    assert(!res.stdout.includes(VALUE), "the value never reaches the guest");
    assertEquals(JSON.parse(res.stdout).headers.authorization, `Bearer ${PLACEHOLDER}`);
  });
});
