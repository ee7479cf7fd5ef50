/**
 * The relay between real peers: curl (or a raw socket) as the guest, a Deno HTTP server (or a
 * raw socket server) as the upstream, both on 127.0.0.1 port 0.
 */

import zlib from "node:zlib";
import { assert, assertEquals } from "../../tests/assert.ts";
import {
  type HttpSecretRelayOptions,
  type HttpSecretRelayStats,
  relayHttpWithSecrets,
} from "./http_relay.ts";

const VALUE = "sk-REAL-4f8e2a9c1b7d";
const PLACEHOLDER = "PH-shuru-0123456789abcdef";
const OTHER_VALUE = "other-real-value-9z";
const OTHER_PLACEHOLDER = "PH-shuru-other-77";
const SCRUB = [{ placeholder: PLACEHOLDER, value: VALUE }, {
  placeholder: OTHER_PLACEHOLDER,
  value: OTHER_VALUE,
}];
/** The secret opted into every place (the substitution mechanics are tested with this). */
const OPTIONS: HttpSecretRelayOptions = {
  inject: [{ placeholder: PLACEHOLDER, value: VALUE, inject: ["header", "query", "body"] }],
  scrub: SCRUB,
};
/** The secret as `--secret` gives it by default: credential headers only. */
const DEFAULTS: HttpSecretRelayOptions = {
  inject: [{ placeholder: PLACEHOLDER, value: VALUE }],
  scrub: SCRUB,
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
    const record: Seen = {
      method: req.method,
      url: req.url,
      headers: Object.fromEntries(req.headers),
      body,
    };
    seen.push(record);
    if (url.pathname.startsWith("/reverse")) {
      // A helpful upstream (an LLM asked to) hands back what it got, transformed.
      const prompt = req.headers.get("x-prompt") ?? "";
      const text = [reverse(body), btoa(body), reverse(prompt), reverse(url.search)].join("\n");
      return new Response(text + "\n", { headers: { "content-type": "text/plain" } });
    }
    const echo = enc.encode(JSON.stringify(record));
    const secretText = enc.encode(
      `the key is ${VALUE}; again ${VALUE}; other ${OTHER_VALUE}\n`.repeat(200),
    );
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
        return new Response("ok\n", {
          headers: { "x-leak": `token=${VALUE}`, "content-type": "text/plain" },
        });
      case "/badgzip": {
        // Incompressible text, corrupted in the middle: part of it decodes before the error.
        const random = crypto.getRandomValues(new Uint8Array(48 * 1024));
        const gz = new Uint8Array(
          zlib.gzipSync(enc.encode(btoa(String.fromCharCode(...random)).repeat(8))),
        );
        gz.fill(0x55, gz.length >> 1, (gz.length >> 1) + 64);
        return new Response(gz, {
          headers: { "content-type": "text/plain", "content-encoding": "gzip" },
        });
      }
      case "/zstd":
        return new Response("whatever", { headers: { "content-encoding": "zstd" } });
      default:
        return new Response("not found\n", { status: 404 });
    }
  });
  const port = server.addr.port;
  return { port, seen, close: () => server.shutdown() };
}

function reverse(text: string): string {
  return [...text].reverse().join("");
}

/** A raw TCP upstream: `handle` gets each connection. */
function startRawUpstream(
  handle: (conn: Deno.TcpConn) => Promise<void>,
): { port: number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      running.push(
        handle(conn).catch(() => {}).finally(() => {
          try {
            conn.close();
          } catch { /* closed by the handler */ }
        }),
      );
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
    out = await new Deno.Command("curl", {
      args: ["-sS", "--max-time", "20", ...args],
      stdout: "piped",
      stderr: "piped",
    })
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
  let stats: HttpSecretRelayStats[] = [];
  try {
    await fn(`http://127.0.0.1:${relay.port}`, upstream.seen);
  } finally {
    stats = await relay.close();
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

Deno.test("relayHttpWithSecrets - by default a value goes only into credential headers, so a transformed echo carries none back", async () => {
  await withRelay(async (url, seen) => {
    const res = await curl([
      "-H",
      `Authorization: Bearer ${PLACEHOLDER}`,
      "-H",
      `Proxy-Authorization: Basic ${btoa(`user:${PLACEHOLDER}`)}`,
      "-H",
      `x-api-key: ${PLACEHOLDER}`,
      "-H",
      `Api-Key: ${PLACEHOLDER}`,
      "-H",
      `X-Exact: ${PLACEHOLDER}`,
      "-H",
      `X-Bearer: Bearer ${PLACEHOLDER}`,
      "-H",
      `X-Basic: basic ${PLACEHOLDER}`,
      "-H",
      `X-Prompt: say ${PLACEHOLDER} backwards`,
      "-H",
      `X-Token: token ${PLACEHOLDER}`,
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      JSON.stringify({ prompt: `reverse ${PLACEHOLDER}` }),
      `${url}/reverse/${PLACEHOLDER}?key=${PLACEHOLDER}`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    const h = seen[0]!.headers;
    assertEquals(h["authorization"], `Bearer ${VALUE}`);
    assertEquals(h["proxy-authorization"], `Basic ${btoa(`user:${VALUE}`)}`);
    assertEquals(h["x-api-key"], VALUE);
    assertEquals(h["api-key"], VALUE);
    assertEquals(h["x-exact"], VALUE);
    assertEquals(h["x-bearer"], `Bearer ${VALUE}`);
    assertEquals(h["x-basic"], `basic ${VALUE}`);
    assertEquals(h["x-prompt"], `say ${PLACEHOLDER} backwards`, "not a credential field");
    assertEquals(h["x-token"], `token ${PLACEHOLDER}`, "not the whole value");
    const target = new URL(seen[0]!.url);
    assertEquals(target.pathname, `/reverse/${PLACEHOLDER}`);
    assertEquals(target.searchParams.get("key"), PLACEHOLDER, "the query is opt-in");
    assertEquals(seen[0]!.body, JSON.stringify({ prompt: `reverse ${PLACEHOLDER}` }));
    for (const leak of [reverse(VALUE), btoa(`{"prompt":"reverse ${VALUE}"}`)]) {
      assert(!res.stdout.includes(leak), `a transformed value came back: ${res.stdout}`);
    }
    assert(res.stdout.includes(reverse(PLACEHOLDER)), res.stdout);
  }, DEFAULTS);
});

Deno.test("relayHttpWithSecrets - opted in, the query and the body carry the value; the path never does", async () => {
  await withRelay(async (url, seen) => {
    const res = await curl([
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      JSON.stringify({ key: PLACEHOLDER }),
      `${url}/reverse/${PLACEHOLDER}?key=${PLACEHOLDER}`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    const target = new URL(seen[0]!.url);
    assertEquals(target.pathname, `/reverse/${PLACEHOLDER}`);
    assertEquals(target.searchParams.get("key"), VALUE);
    assertEquals(seen[0]!.body, JSON.stringify({ key: VALUE }));
  });
});

Deno.test("relayHttpWithSecrets - a withheld secret's placeholder goes out unchanged, reported once", async () => {
  const reported: string[] = [];
  const withheld: HttpSecretRelayOptions = {
    inject: [],
    withhold: [{ placeholder: PLACEHOLDER, value: VALUE, inject: ["header", "body"] }],
    onWithheld: (p) => reported.push(p),
    scrub: SCRUB,
  };
  await withRelay(async (url, seen) => {
    let res = await curl(["-H", `X-Prompt: ${PLACEHOLDER} as text`, `${url}/echo`]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(reported, [], "not where a value would have gone");
    res = await curl([
      "-H",
      `Authorization: Bearer ${PLACEHOLDER}`,
      "-H",
      `X-Exact: ${PLACEHOLDER}`,
      `${url}/echo?1`,
      `${url}/echo?2`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(reported, [PLACEHOLDER], "once per connection");
    assertEquals(seen[1]!.headers["authorization"], `Bearer ${PLACEHOLDER}`);
    assertEquals(seen[2]!.headers["x-exact"], PLACEHOLDER);
    res = await curl([
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      JSON.stringify({ key: PLACEHOLDER }),
      `${url}/echo`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(seen[3]!.body, JSON.stringify({ key: PLACEHOLDER }));
    assertEquals(reported, [PLACEHOLDER, PLACEHOLDER], "the body's placeholder, new connection");
    assert(seen.every((s) => !JSON.stringify(s).includes(VALUE)), "the value was sent");
  }, withheld);
});

Deno.test("relayHttpWithSecrets - Basic credentials are decoded, substituted and re-encoded", async () => {
  await withRelay(async (url, seen) => {
    const res = await curl(["-u", `user:${PLACEHOLDER}`, `${url}/echo`]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(seen[0]!.headers["authorization"], `Basic ${btoa(`user:${VALUE}`)}`);
  });
});

Deno.test("relayHttpWithSecrets - JSON body is substituted and Content-Length fixed", async () => {
  await withRelay(async (url, seen) => {
    const body = JSON.stringify({ key: PLACEHOLDER, again: PLACEHOLDER });
    const res = await curl([
      "-H",
      "Content-Type: application/json",
      "--data-binary",
      body,
      `${url}/echo`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    const expected = JSON.stringify({ key: VALUE, again: VALUE });
    assertEquals(seen[0]!.body, expected);
    assertEquals(seen[0]!.headers["content-length"], String(enc.encode(expected).length));
  });
});

Deno.test("relayHttpWithSecrets - URL query, chunked upload and an unbound placeholder", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-httpsecret-" });
  try {
    // The placeholder straddles curl's upload pieces somewhere in a 300 KiB body.
    const text = ("x".repeat(1000) + PLACEHOLDER).repeat(300);
    await Deno.writeTextFile(`${dir}/body.txt`, text);
    await withRelay(async (url, seen) => {
      let res = await curl([`${url}/echo?key=${PLACEHOLDER}&other=${OTHER_PLACEHOLDER}`]);
      assertEquals(res.code, 0, res.stderr);
      assertEquals(new URL(seen[0]!.url).searchParams.get("key"), VALUE);
      assertEquals(
        new URL(seen[0]!.url).searchParams.get("other"),
        OTHER_PLACEHOLDER,
        "not bound to this host",
      );
      res = await curl([
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: text/plain",
        "-H",
        `X-Other: ${OTHER_PLACEHOLDER}`,
        "--data-binary",
        `@${dir}/body.txt`,
        `${url}/echo`,
      ]);
      assertEquals(res.code, 0, res.stderr);
      assertEquals(seen[1]!.headers["transfer-encoding"], "chunked");
      assertEquals(seen[1]!.body, text.replaceAll(PLACEHOLDER, VALUE));
      assertEquals(seen[1]!.headers["x-other"], OTHER_PLACEHOLDER);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("relayHttpWithSecrets - values are scrubbed from plain, chunked, gzip, deflate and br responses", async () => {
  const expected = `the key is ${PLACEHOLDER}; again ${PLACEHOLDER}; other ${OTHER_PLACEHOLDER}\n`
    .repeat(200);
  await withRelay(async (url) => {
    for (const path of ["/gzip", "/br", "/deflate"]) {
      const res = await curl([`${url}${path}`]);
      assertEquals(res.code, 0, res.stderr);
      assertEquals(res.stdout, expected, path);
    }
    const chunked = await curl([`${url}/chunked`]);
    assertEquals(chunked.stdout, `a ${PLACEHOLDER} b\n`);
    const header = await curl(["-D", "-", `${url}/header`]);
    assert(header.stdout.includes(`x-leak: token=${PLACEHOLDER}`), header.stdout);
    assert(!header.stdout.includes(VALUE));
    // --compressed: curl asks for gzip/br itself; it gets the decoded body either way.
    const compressed = await curl(["--compressed", `${url}/br`]);
    assertEquals(compressed.stdout, expected);
  });
});

Deno.test("relayHttpWithSecrets - an unknown content coding is refused with 502, not leaked", async () => {
  await withRelay(async (url) => {
    const res = await curl(["-w", "%{http_code}", "-o", "/dev/null", `${url}/zstd`]);
    assertEquals(res.stdout, "502");
  });
});

Deno.test("relayHttpWithSecrets - keep-alive: several requests on one connection", async () => {
  const stats = await withRelay(async (url, seen) => {
    const res = await curl([
      "-H",
      `X-Key: ${PLACEHOLDER}`,
      `${url}/echo?1`,
      `${url}/gzip`,
      `${url}/echo?3`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(seen.length, 3);
    assert(seen.every((s) => s.headers["x-key"] === VALUE));
  });
  assertEquals(stats.length, 1, "one guest connection");
  assertEquals(stats[0]!.requests, 3);
});

Deno.test("relayHttpWithSecrets - Expect: 100-continue on a buffered body and on a streamed one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shuru-httpsecret-" });
  try {
    const json = JSON.stringify({ key: PLACEHOLDER, pad: "p".repeat(2 * 1024 * 1024) });
    await Deno.writeTextFile(`${dir}/big.json`, json);
    const binary = new Uint8Array(3 * 1024 * 1024).map((_, i) => i * 7);
    await Deno.writeFile(`${dir}/big.bin`, binary);
    await withRelay(async (url, seen) => {
      let res = await curl([
        "-v",
        "-H",
        "Expect: 100-continue",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        `@${dir}/big.json`,
        `${url}/echo`,
      ]);
      assertEquals(res.code, 0, res.stderr);
      assert(res.stderr.includes("HTTP/1.1 100 Continue"), "curl got the relay's 100");
      assertEquals(seen[0]!.body, json.replace(PLACEHOLDER, VALUE));
      assertEquals(seen[0]!.headers["expect"], undefined);
      res = await curl([
        "-v",
        "-H",
        "Expect: 100-continue",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        `@${dir}/big.bin`,
        `${url}/echo`,
      ]);
      assertEquals(res.code, 0, res.stderr);
      assert(res.stderr.includes("HTTP/1.1 100 Continue"), "curl got the upstream's 100");
      assertEquals(seen[1]!.headers["expect"], "100-continue");
      assertEquals(seen[1]!.headers["content-length"], String(binary.length));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A raw guest: sends `request`, reads until the relay closes. */
async function rawExchange(port: number, request: Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    for (let at = 0; at < request.length;) at += await conn.write(request.subarray(at));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    return dec.decode(concat(chunks));
  } finally {
    conn.close();
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("relayHttpWithSecrets - malformed requests get 4xx/5xx and a closed connection", async () => {
  await withRelay(async (_url, seen) => {
    const port = Number(_url.split(":").pop());
    const cases: [string, string | Uint8Array][] = [
      ["400", "GARBAGE\r\n\r\n"],
      ["400", "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"],
      ["400", "GET / HTTP/1.1\r\nHost x\r\n\r\n"],
      ["400", "GET / HTTP/1.1\nHost: x\r\n\r\n"],
      ["400", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"],
      ["400", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"],
      ["501", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
      ["505", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
      ["405", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"],
      ["431", `GET / HTTP/1.1\r\nX-Big: ${"a".repeat(70 * 1024)}\r\n\r\n`],
      ["431", `GET / HTTP/1.1\r\n${"X-A: b\r\n".repeat(200)}\r\n`],
      // The guest keeps sending after its bad head: it must still read the answer, not a reset.
      [
        "400",
        `POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n${
          "z".repeat(768 * 1024)
        }`,
      ],
    ];
    for (const [status, request] of cases) {
      const bytes = typeof request === "string" ? enc.encode(request) : request;
      const answer = await rawExchange(port, bytes);
      assert(
        answer.startsWith(`HTTP/1.1 ${status} `),
        `${JSON.stringify(request).slice(0, 60)} → ${answer.slice(0, 40)}`,
      );
      assert(answer.includes("Connection: close"));
    }
    assertEquals(seen.length, 0, "nothing malformed went upstream");
  });
});

Deno.test("relayHttpWithSecrets - a websocket upgrade switches to raw passthrough", async () => {
  const upstream = startRawUpstream(async (conn) => {
    const buf = new Uint8Array(65536);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += dec.decode(buf.subarray(0, n));
    }
    assert(head.includes(`Authorization: Bearer ${VALUE}`), "the upgrade request is substituted");
    await conn.write(enc.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nhello",
    ));
    // Echo raw bytes until the guest half-closes, then close.
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      await conn.write(buf.slice(0, n));
    }
    await conn.closeWrite();
  });
  const relay = startRelay(upstream.port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
    await conn.write(enc.encode(
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${PLACEHOLDER}\r\n\r\n`,
    ));
    const frames = `raw ${PLACEHOLDER} bytes stay as they are`;
    let got = "";
    const buf = new Uint8Array(65536);
    let sent = false;
    while (!got.endsWith(frames)) {
      const n = await conn.read(buf);
      if (n === null) break;
      got += dec.decode(buf.subarray(0, n));
      if (!sent && got.includes("hello")) {
        await conn.write(enc.encode(frames));
        sent = true;
      }
    }
    assert(got.startsWith("HTTP/1.1 101 Switching Protocols\r\n"), got);
    assert(got.endsWith(`\r\n\r\nhello${frames}`), got);
    await conn.closeWrite();
    assertEquals(await conn.read(buf), null, "upstream's close reaches the guest");
    conn.close();
  } finally {
    const stats = await relay.close();
    await upstream.close();
    assertEquals(stats[0]!.requests, 1);
  }
});

Deno.test("relayHttpWithSecrets - chunked response trailers are scrubbed; interim 103 is relayed", async () => {
  const upstream = startRawUpstream(async (conn) => {
    const buf = new Uint8Array(65536);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += dec.decode(buf.subarray(0, n));
    }
    const value = enc.encode(VALUE);
    // The value split inside a chunk boundary, a chunk extension, and a trailer with the value.
    await conn.write(enc.encode("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"));
    await conn.write(enc.encode(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sig\r\n\r\n" +
        `4;ext=1\r\n${VALUE.slice(0, 4)}\r\n`,
    ));
    await conn.write(enc.encode(`${(value.length - 4).toString(16)}\r\n${VALUE.slice(4)}\r\n`));
    await conn.write(enc.encode(`0\r\nX-Sig: ${VALUE}\r\n\r\n`));
  });
  const relay = startRelay(upstream.port);
  try {
    const answer = await rawExchange(
      relay.port,
      enc.encode("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert(
      answer.startsWith("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n"),
      answer,
    );
    assert(!answer.includes(VALUE), answer);
    const body = answer.slice(answer.indexOf("\r\n\r\n", answer.indexOf("200 OK")) + 4);
    const hex = PLACEHOLDER.length.toString(16);
    assertEquals(body, `${hex}\r\n${PLACEHOLDER}\r\n0\r\nX-Sig: ${PLACEHOLDER}\r\n\r\n`);
  } finally {
    await relay.close();
    await upstream.close();
  }
});

Deno.test("relayHttpWithSecrets - equal-length secrets keep Content-Length; HTTP/1.0 gets a close-delimited body", async () => {
  const sameLength = { placeholder: "PH-".padEnd(VALUE.length, "x"), value: VALUE };
  await withRelay(async (url) => {
    const res = await curl(["-D", "-", `${url}/gzip`]);
    assert(/transfer-encoding: chunked/i.test(res.stdout), "decoded bodies still need re-framing");
    const plain = await curl(["-D", "-", "-H", `X-K: ${sameLength.placeholder}`, `${url}/echo`]);
    assert(/content-length: \d+/i.test(plain.stdout), plain.stdout);
    assert(plain.stdout.includes(`"x-k":"${sameLength.placeholder}"`));
  }, { inject: [sameLength], scrub: [sameLength] });
  await withRelay(async (url) => {
    const res = await curl(["-0", "-D", "-", `${url}/gzip`]);
    assert(/connection: close/i.test(res.stdout), res.stdout);
    assert(res.stdout.endsWith(`other ${OTHER_PLACEHOLDER}\n`), res.stdout.slice(-100));
  });
});

Deno.test("relayHttpWithSecrets - pipelined requests are answered in order; HEAD has no body", async () => {
  await withRelay(async (url, seen) => {
    const port = Number(url.split(":").pop());
    const answer = await rawExchange(
      port,
      enc.encode(
        `GET /echo?n=1 HTTP/1.1\r\nHost: x\r\nX-K: ${PLACEHOLDER}\r\n\r\n` +
          `HEAD /gzip HTTP/1.1\r\nHost: x\r\n\r\n` +
          `GET /echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      ),
    );
    assertEquals(seen.map((s) => new URL(s.url).search || s.method), ["?n=1", "HEAD", "?n=3"]);
    const statusLines = answer.split("\r\n").filter((l) => l.startsWith("HTTP/1.1 "));
    assertEquals(statusLines, ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    assert(answer.indexOf("n=1") < answer.indexOf("n=3"), "in order");
    assert(answer.includes(`"x-k":"${PLACEHOLDER}"`));
    assert(!answer.includes(VALUE));
  });
});

Deno.test("relayHttpWithSecrets - bodies over maxBufferedBody and binary bodies pass unchanged", async () => {
  const body = JSON.stringify({ key: PLACEHOLDER, pad: "p".repeat(1000) });
  await withRelay(async (url, seen) => {
    await curl(["-H", "Content-Type: application/json", "--data-binary", body, `${url}/echo`]);
    await curl([
      "-H",
      "Content-Type: application/octet-stream",
      "--data-binary",
      PLACEHOLDER,
      `${url}/echo`,
    ]);
    assertEquals(seen[0]!.body, body);
    assertEquals(seen[1]!.body, PLACEHOLDER);
  }, { ...OPTIONS, maxBufferedBody: 100 });
});

Deno.test("relayHttpWithSecrets - onExchange sees placeholders only; unsafe bytes in a value", async () => {
  const odd = { placeholder: "PH-odd-value-1", value: "a b/é", inject: ["query"] as const };
  const broken = { placeholder: "PH-broken-2", value: "x\r\nInjected: yes" };
  const log: { method: string; target: string; status: number }[] = [];
  await withRelay(async (url, seen) => {
    await curl([`${url}/echo?k=${odd.placeholder}`]);
    assertEquals(new URL(seen[0]!.url).search, "?k=a%20b/%C3%A9");
    const res = await curl([
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      "-H",
      `X-K: ${broken.placeholder}`,
      `${url}/echo`,
    ]);
    assertEquals(res.stdout, "502");
    assertEquals(seen.length, 1, "the header was never sent");
  }, { inject: [odd, broken], scrub: [odd, broken], onExchange: (e) => log.push(e) });
  assertEquals(log, [
    { method: "GET", target: `/echo?k=${odd.placeholder}`, status: 200 },
    { method: "GET", target: "/echo", status: 502 },
  ]);
});

Deno.test("relayHttpWithSecrets - a corrupt gzip body ends the response unfinished", async () => {
  await withRelay(async (url) => {
    const res = await curl([`${url}/badgzip`]);
    assert(res.code !== 0, "curl sees a truncated chunked body");
    assert(!res.stdout.includes(VALUE));
  });
});

Deno.test("relayHttpWithSecrets - an upgrade the upstream declines stays HTTP on the same connection", async () => {
  const stats = await withRelay(async (url, seen) => {
    const res = await curl([
      "-H",
      "Connection: Upgrade",
      "-H",
      "Upgrade: websocket",
      "-H",
      `X-K: ${PLACEHOLDER}`,
      `${url}/echo?1`,
      `${url}/echo?2`,
    ]);
    assertEquals(res.code, 0, res.stderr);
    assertEquals(seen.length, 2);
    assertEquals(seen[1]!.headers["x-k"], VALUE);
  });
  assertEquals(stats.length, 1);
  assertEquals(stats[0]!.requests, 2);
});
