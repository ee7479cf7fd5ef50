/**
 * The terminator between real peers: curl (the guest's side, trusting only the run's CA) on a
 * loopback socket whose bytes go through `SecretTerminator`, and a Deno HTTPS server (the real
 * host, with a certificate from another CA that only the terminator trusts).
 */

import { assert, assertEquals } from "../../tests/assert.ts";
import type { DialTarget, HostStream } from "../relay.ts";
import { CertificateAuthority } from "./ca.ts";
import type { InjectPlace } from "./inject.ts";
import { makePlaceholder } from "./placeholder.ts";
import { type Secret, SecretTerminator } from "./terminator.ts";

const VALUE = "sk-live-0123456789abcdefghijklmnop";
/** A response large enough to be in flight when the exchange ends. */
const BIG = new Uint8Array(8 * 1024 * 1024).fill(0x61);

interface Fixture extends AsyncDisposable {
  dir: string;
  runCaFile: string;
  frontPort: number;
  secret: Secret;
  errors: string[];
  /** What the upstream server received, per request. */
  received: { auth: string | null; body: string }[];
}

/** curl → front listener → terminator → HTTPS upstream on 127.0.0.1. */
async function fixture(
  opts: {
    trustUpstream: boolean;
    protocol?: "tls" | "http";
    slowGuest?: boolean;
    allowHttp?: boolean;
    inject?: InjectPlace[];
  },
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-terminator-" });
  const upstreamCa = await CertificateAuthority.create();
  const upstreamId = await upstreamCa.leaf("api.test");
  const received: Fixture["received"] = [];
  const tlsUpstream = opts.protocol !== "http";
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    ...(tlsUpstream ? { key: upstreamId.keyPem, cert: upstreamId.certPem } : {}),
    onListen: () => {},
  }, async (req) => {
    if (new URL(req.url).pathname === "/big") return new Response(BIG);
    const body = await req.text();
    const auth = req.headers.get("authorization");
    received.push({ auth, body });
    return Response.json({ auth, body });
  });
  const runCa = await CertificateAuthority.create();
  const runCaFile = `${dir}/run-ca.pem`;
  await Deno.writeTextFile(runCaFile, runCa.certificatePem);
  const secret: Secret = {
    name: "API_KEY",
    value: VALUE,
    placeholder: makePlaceholder(VALUE),
    hosts: ["api.test"],
    ...(opts.allowHttp ? { allowHttp: true } : {}),
    ...(opts.inject ? { inject: opts.inject } : {}),
  };
  const errors: string[] = [];
  const terminator = new SecretTerminator({
    secrets: [secret],
    ca: runCa,
    onError: (l) => errors.push(l),
    ...(opts.trustUpstream ? { upstreamCaCerts: [upstreamCa.certificatePem] } : {}),
  });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const target: DialTarget = {
    hostname: "127.0.0.1",
    port: server.addr.port,
    name: "api.test",
    protocol: opts.protocol ?? "tls",
  };
  const pumps: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of front) {
      pumps.push(
        terminator.dial(target).then(
          (stream) => pump(conn, stream, opts.slowGuest ?? false),
          () => conn.close(),
        ),
      );
    }
  })();
  return {
    dir,
    runCaFile,
    frontPort: (front.addr as Deno.NetAddr).port,
    secret,
    errors,
    received,
    async [Symbol.asyncDispose]() {
      front.close();
      // A relay that never ends a connection fails the test instead of stalling it.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the terminator left connections open after 20 s")),
          20_000,
        );
      });
      try {
        await Promise.race([
          (async () => {
            await accepting;
            await Promise.allSettled(pumps);
            await server.shutdown();
          })(),
          stalled,
        ]);
      } finally {
        clearTimeout(timer);
        await Deno.remove(dir, { recursive: true });
      }
    },
  };
}

/** Relays a client socket and a host stream until both directions end (what the Relay does). */
async function pump(conn: Deno.TcpConn, stream: HostStream, slow: boolean): Promise<void> {
  const up = (async () => {
    const buf = new Uint8Array(65536);
    for (let n; (n = await conn.read(buf)) !== null;) {
      for (let o = 0; o < n;) o += await stream.write(buf.subarray(o, n));
    }
    await stream.closeWrite();
  })();
  const down = (async () => {
    // A slow guest: the relay only reads what the guest's window takes.
    const buf = new Uint8Array(slow ? 16384 : 65536);
    for (let n; (n = await stream.read(buf)) !== null;) {
      if (slow) await new Promise((r) => setTimeout(r, 1));
      for (let o = 0; o < n;) o += await conn.write(buf.subarray(o, n));
    }
    await conn.closeWrite().catch(() => {});
  })();
  await Promise.allSettled([up, down]);
  stream.close();
  conn.close();
}

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output().catch(() => {
    throw new Error("terminator_test needs curl: apt-get install curl");
  });
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function url(f: Fixture, path: string, scheme = "https"): string[] {
  return [
    "--resolve",
    `api.test:${f.frontPort}:127.0.0.1`,
    `${scheme}://api.test:${f.frontPort}${path}`,
  ];
}

Deno.test("terminator: the guest's TLS ends with a run-CA leaf; the value reaches the host, not the guest", async () => {
  await using f = await fixture({ trustUpstream: true, inject: ["header", "body"] });
  const r = await curl([
    "--cacert",
    f.runCaFile,
    "-H",
    `Authorization: Bearer ${f.secret.placeholder}`,
    "--data-binary",
    `{"key":"${f.secret.placeholder}"}`,
    "-H",
    "content-type: application/json",
    ...url(f, "/v1/echo"),
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(f.received[0]?.auth, `Bearer ${VALUE}`, "the host received the value");
  assertEquals(f.received[0]?.body, `{"key":"${VALUE}"}`);
  assert(!r.stdout.includes(VALUE), `the value came back into the guest: ${r.stdout}`);
  assert(r.stdout.includes(f.secret.placeholder), r.stdout);
});

Deno.test("terminator: a client without the run's CA refuses the leaf (curl exit 60)", async () => {
  await using f = await fixture({ trustUpstream: true });
  const r = await curl(url(f, "/"));
  assertEquals(r.code, 60, r.stderr);
  assertEquals(f.received.length, 0);
});

Deno.test("terminator: an upstream the host does not trust gets a 502 naming why, and no request", async () => {
  await using f = await fixture({ trustUpstream: false });
  const r = await curl([
    "--cacert",
    f.runCaFile,
    "-H",
    `x-key: ${f.secret.placeholder}`,
    ...url(f, "/"),
  ]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes("cannot reach api.test"), r.stdout);
  assert(/certificate|issuer|trust/i.test(r.stdout), r.stdout);
  assertEquals(f.received.length, 0, "nothing reached the untrusted host");
  assert(f.errors.length > 0 && !f.errors.join("\n").includes(VALUE), f.errors.join("\n"));
});

Deno.test("terminator: plain HTTP to a secret host carries the placeholder; one line says why", async () => {
  await using f = await fixture({ trustUpstream: true, protocol: "http" });
  for (let i = 0; i < 2; i++) {
    const r = await curl([
      "-H",
      `Authorization: Bearer ${f.secret.placeholder}`,
      ...url(f, "/", "http"),
    ]);
    assertEquals(r.code, 0, r.stderr);
  }
  const auth = `Bearer ${f.secret.placeholder}`;
  assertEquals(f.received.map((r) => r.auth), [auth, auth], "the value never went out");
  assertEquals(f.errors.length, 1, f.errors.join("\n"));
  assert(/secret API_KEY not sent to api\.test:\d+: plain HTTP/.test(f.errors[0]!), f.errors[0]);
  assert(!f.errors[0]!.includes(VALUE));
});

Deno.test("terminator: a secret that allows HTTP gets the substitution over plain HTTP", async () => {
  await using f = await fixture({ trustUpstream: true, protocol: "http", allowHttp: true });
  const r = await curl([
    "-H",
    `Authorization: Bearer ${f.secret.placeholder}`,
    ...url(f, "/", "http"),
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(f.received[0]?.auth, `Bearer ${VALUE}`);
  assert(!r.stdout.includes(VALUE), r.stdout);
  assertEquals(f.errors, []);
});

Deno.test("terminator: the last response arrives whole when the exchange ends the connection", async () => {
  for (const protocol of ["tls", "http"] as const) {
    await using f = await fixture({ trustUpstream: true, protocol, slowGuest: true });
    for (let i = 0; i < 2; i++) {
      const r = await curl([
        ...(protocol === "tls" ? ["--cacert", f.runCaFile] : []),
        "-H",
        "Connection: close",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        ...url(f, "/big", protocol === "tls" ? "https" : "http"),
      ]);
      assertEquals([r.code, r.stdout], [0, String(BIG.length)], `${protocol}: ${r.stderr}`);
    }
  }
});

/** A real TLS ClientHello for `api.test` (what a client sends first), recorded off a socket. */
async function clientHello(): Promise<Uint8Array> {
  const recorder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = Deno.connect({ hostname: "127.0.0.1", port: (recorder.addr as Deno.NetAddr).port })
    .then((tcp) => Deno.startTls(tcp, { hostname: "api.test" }))
    .then((tls) => tls.handshake().finally(() => tls.close()))
    .catch(() => {});
  const conn = await recorder.accept();
  const buf = new Uint8Array(16384);
  const n = await conn.read(buf);
  conn.close();
  recorder.close();
  await client;
  return buf.slice(0, n ?? 0);
}

Deno.test("terminator: a guest that leaves during the TLS handshake ends its connection and the upstream's", async () => {
  await using f = await fixture({ trustUpstream: true });
  const hello = await clientHello();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: f.frontPort });
  await conn.write(hello);
  await conn.closeWrite();
  // The relay must close the guest's side within a bound, not wait forever for a handshake.
  const closed = (async () => {
    const buf = new Uint8Array(65536);
    try {
      while (await conn.read(buf) !== null) { /* the server's flight, if any */ }
    } catch { /* reset: closed too */ }
    return "closed";
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    closed,
    new Promise<string>((r) => timer = setTimeout(() => r("still open after 15 s"), 15_000)),
  ]);
  clearTimeout(timer);
  conn.close();
  assertEquals(outcome, "closed");
  assertEquals(f.received.length, 0);
});
