/**
 * The "real hosts" of the secret tests, run inside the test's network namespace: an HTTPS
 * server (certificate for `api.test` and `other.test` from a test CA that only the shuru
 * process trusts, through DENO_CERT) and a plain HTTP server. Each answers with what it
 * received (method, path, Authorization, X-Key, body, body length as the server counted it),
 * and `/leak` answers with the value in a header, in a body, and gzip-compressed.
 *
 * Usage: deno run -A _secret_server.ts DIR VALUE
 * Writes DIR/ca.pem, prints `ports HTTPS HTTP` once listening, logs each request as a JSON
 * line to DIR/requests.jsonl.
 *
 * @module
 */

import { gzipSync } from "node:zlib";
import { CertificateAuthority } from "../proxy/mod.ts";

const [dir, value] = Deno.args as [string?, string?];
if (!dir || !value) throw new Error("usage: _secret_server.ts DIR VALUE");
const secretValue: string = value;
const ca = await CertificateAuthority.create({ commonName: "shuru test upstream CA" });
const api = await ca.leaf("api.test");
const other = await ca.leaf("other.test");
await Deno.writeTextFile(`${dir}/ca.pem`, ca.certificatePem);
const log = await Deno.open(`${dir}/requests.jsonl`, { append: true, create: true });

async function handle(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const body = await req.text();
  const record = {
    method: req.method,
    // HTTP/2 (passthrough TLS negotiates it) has no Host header, only the URL's authority.
    host: req.headers.get("host") ?? url.host,
    path: url.pathname + url.search,
    authorization: req.headers.get("authorization"),
    xKey: req.headers.get("x-key"),
    body,
    contentLength: req.headers.get("content-length"),
  };
  await log.write(new TextEncoder().encode(JSON.stringify(record) + "\n"));
  if (url.pathname === "/leak") {
    const text = `value=${secretValue}\n`.repeat(1000);
    const gz = url.searchParams.get("gzip") === "1";
    return new Response(gz ? gzipSync(text) : text, {
      headers: {
        "x-echo": secretValue,
        "content-type": "text/plain",
        ...(gz ? { "content-encoding": "gzip" } : {}),
      },
    });
  }
  return Response.json(record);
}

const https = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  // SNI picks the certificate; both names are served by this one listener.
  cert: api.certPem,
  key: api.keyPem,
  onListen: () => {},
}, handle);
const httpsOther = Deno.serve(
  { hostname: "127.0.0.1", port: 0, cert: other.certPem, key: other.keyPem, onListen: () => {} },
  handle,
);
const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
console.log(`ports ${https.addr.port} ${http.addr.port} ${httpsOther.addr.port}`);
await Promise.all([https.finished, http.finished, httpsOther.finished]);
