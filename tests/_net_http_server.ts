/**
 * Test fixture: HTTP servers on 127.0.0.1 (or HOSTNAME; port 0 each), started by the network
 * tests (tests/_netns.ts) inside the test's network namespace. Prints one JSON line
 * `{ports, blobSha256}` on stdout, then serves until killed:
 * - `GET /` → `hello from port PORT\n`
 * - `GET /id/N` → `id N\n` (N: digits)
 * - `GET /blob` → a fixed random blob (`BLOB_MIB` MiB)
 * - `POST /upload` → `LENGTH SHA256\n` of the body
 *
 * Usage: `deno run -A tests/_net_http_server.ts [SERVERS] [BLOB_MIB] [HOSTNAME]`
 *
 * @module
 */

async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const servers = Number(Deno.args[0] ?? "1");
const blobMiB = Number(Deno.args[1] ?? "16");
const hostname = Deno.args[2] ?? "127.0.0.1";
const blob = new Uint8Array(blobMiB * 1024 * 1024);
for (let off = 0; off < blob.length; off += 65536) {
  crypto.getRandomValues(blob.subarray(off, off + 65536));
}
const blobSha256 = await sha256Hex(blob);

const ports: number[] = [];
for (let i = 0; i < servers; i++) {
  let port = 0;
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
    { hostname, port: 0, onListen: () => {} },
    async (req): Promise<Response> => {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/") {
        return new Response(`hello from port ${port}\n`);
      }
      const id = /^\/id\/(\d{1,9})$/.exec(url.pathname);
      if (req.method === "GET" && id) return new Response(`id ${id[1]}\n`);
      if (req.method === "GET" && url.pathname === "/blob") return new Response(blob);
      if (req.method === "POST" && url.pathname === "/upload") {
        const body = new Uint8Array(await req.arrayBuffer());
        return new Response(`${body.length} ${await sha256Hex(body)}\n`);
      }
      return new Response("not found\n", { status: 404 });
    },
  );
  port = server.addr.port;
  ports.push(port);
}
console.log(JSON.stringify({ ports, blobSha256 }));
