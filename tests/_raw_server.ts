/**
 * Test fixture: two raw TCP servers on 127.0.0.1 that write down every byte each connection
 * sent, started inside the test's network namespace (tests/_netns.ts). Prints one JSON line
 * `{http, banner}` (their ports) on stdout, then serves until killed, appending one JSON line
 * `{server, conn, data}` (data as latin1 text) to LOG for every read:
 * - `http` answers each request head (CRLF CRLF) with `200` and the body `ok`;
 * - `banner` speaks first (`220 ready`, as SMTP does) and answers each line with `250 ok`.
 *
 * Usage: `deno run -A tests/_raw_server.ts LOG`
 *
 * @module
 */

const log = Deno.args[0];
if (log === undefined) throw new Error("usage: _raw_server.ts LOG");
const enc = new TextEncoder();
let nextConn = 0;

function record(server: string, conn: number, data: string): void {
  Deno.writeTextFileSync(log!, JSON.stringify({ server, conn, data }) + "\n", { append: true });
}

async function serve(listener: Deno.TcpListener, kind: "http" | "banner"): Promise<void> {
  for await (const conn of listener) {
    const id = nextConn++;
    (async () => {
      record(kind, id, "");
      if (kind === "banner") await conn.write(enc.encode("220 ready\r\n"));
      let text = "";
      let answered = 0;
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        const data = new TextDecoder("latin1").decode(buf.subarray(0, n));
        record(kind, id, data);
        text += data;
        const units = kind === "http"
          ? text.split("\r\n\r\n").length - 1
          : text.split("\n").length - 1;
        for (; answered < units; answered++) {
          await conn.write(enc.encode(
            kind === "http" ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" : "250 ok\r\n",
          ));
        }
      }
    })().catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    });
  }
}

const http = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const banner = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(JSON.stringify({ http: http.addr.port, banner: banner.addr.port }));
await Promise.all([serve(http, "http"), serve(banner, "banner")]);
