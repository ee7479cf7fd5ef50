/**
 * The relay with an allow-list, in process: a guest made of frames (`_test_guest.ts`) talks
 * through a real Relay to real servers on 127.0.0.1, named by `addHosts`. Each bypass a guest
 * would try must end in a reset, a `shuru: blocked` line, and no byte at the server.
 */

import { assert, assertEquals } from "../tests/_assert.ts";
import { NetworkPolicy, type NetworkPolicyOptions } from "./policy.ts";
import { Relay } from "./relay.ts";
import { type GuestSocket, TestGuest } from "./_test_guest.ts";
import { realClientHello, splitIntoRecords } from "./_test_tls.ts";
import { parseIpv4 } from "./wire/address.ts";

/** A loopback server that records what each connection sent. */
class RecordingServer implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  readonly received: string[] = [];
  /** Bytes after an upgrade request's head arrived before the server answered it. */
  earlyAfterUpgrade = false;
  readonly #conns: Deno.TcpConn[] = [];
  readonly #serving: Promise<void>;
  #notify: (() => void) | undefined;

  /**
   * `mode`: "http" answers each request head with a 2-byte body (the first asking to upgrade
   * gets a 101 instead); "banner" greets first, as SMTP and SSH servers do.
   */
  constructor(readonly mode: "http" | "banner") {
    this.listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#serving = this.#serve();
  }

  get port(): number {
    return this.listener.addr.port;
  }

  /** Everything all connections sent, joined. */
  get all(): string {
    return this.received.join("");
  }

  async until(ready: () => boolean, what: string): Promise<void> {
    const deadline = performance.now() + 20_000;
    while (!ready()) {
      if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#notify = r;
        timer = setTimeout(r, 100);
      });
      clearTimeout(timer);
    }
  }

  async #serve(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch {
        return;
      }
      this.#conns.push(conn);
      const index = this.received.push("") - 1;
      this.#notify?.();
      this.#handle(conn, index).catch(() => {});
    }
  }

  async #handle(conn: Deno.TcpConn, index: number): Promise<void> {
    const enc = new TextEncoder();
    if (this.mode === "banner") await conn.write(enc.encode("220 ready\r\n"));
    let answered = 0;
    let upgraded = false;
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      this.received[index] += new TextDecoder("latin1").decode(buf.subarray(0, n));
      this.#notify?.();
      if (this.mode !== "http" || upgraded) continue;
      const heads = this.received[index]!.split("\r\n\r\n").length - 1;
      for (; answered < heads; answered++) {
        if (/\r\nUpgrade: /i.test(this.received[index]!)) {
          upgraded = true;
          if (!this.received[index]!.endsWith("\r\n\r\n")) this.earlyAfterUpgrade = true;
          await conn.write(enc.encode(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
          ));
          break;
        }
        await conn.write(enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`));
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#serving;
  }
}

/** A relay over a test guest with `policy`; `api.test` is a server named by --add-host. */
async function withRelay(
  options: {
    policy: NetworkPolicyOptions;
    resolve?: (name: string) => Promise<number[]>;
    silentStartMs?: number;
  },
  body: (ctx: { guest: TestGuest; blocked: string[] }) => Promise<void>,
): Promise<void> {
  const guest = new TestGuest();
  const blocked: string[] = [];
  const relay = new Relay({
    link: guest.link,
    policy: new NetworkPolicy(options.policy),
    // Only the test's names exist; nothing asks a real resolver.
    resolve: options.resolve ?? (() => Promise.resolve([])),
    onBlocked: (line) => blocked.push(line),
    ...(options.silentStartMs !== undefined ? { silentStartMs: options.silentStartMs } : {}),
  });
  const running = relay.run();
  try {
    await body({ guest, blocked });
  } finally {
    relay.close();
    await running;
  }
}

const API = {
  allowHosts: ["api.test"],
  addHosts: { "api.test": "127.0.0.1", "evil.test": "127.0.0.1" },
};

async function open(guest: TestGuest, name: string, port: number): Promise<GuestSocket> {
  const answer = await guest.resolve(name);
  assertEquals(answer.addresses.length, 1, `${name} resolves`);
  const s = guest.connect(answer.addresses[0]!, port);
  assertEquals(await s.opened(), "open");
  return s;
}

/** The guest sends `bytes` on a connection to api.test: the relay must reset it, unsent. */
async function assertRefused(
  bytes: Uint8Array | string,
  expectedLine: string,
  opts: { silentStartMs?: number } = {},
): Promise<void> {
  await using server = new RecordingServer("http");
  await withRelay({ policy: API, ...opts }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    s.write(bytes);
    await s.reset();
    assert(
      blocked.some((l) => l.includes(expectedLine)),
      `expected a line with "${expectedLine}", got ${JSON.stringify(blocked)}`,
    );
    assertEquals(server.all, "", "the server got bytes of a refused connection");
  });
}

Deno.test("relay - a ClientHello split over two records is read and its name refused", async () => {
  const hello = splitIntoRecords(await realClientHello("evil.test"), [40]);
  await assertRefused(hello, "shuru: blocked evil.test:");
});

Deno.test("relay - a ClientHello split over many records to an allowed name goes through whole", async () => {
  await using server = new RecordingServer("http");
  const hello = splitIntoRecords(await realClientHello("api.test"), [1, 2, 3, 50, 7]);
  await withRelay({ policy: API }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    s.write(hello);
    await server.until(() => server.all.length === hello.length, "the whole hello");
    assertEquals(server.all, new TextDecoder("latin1").decode(hello));
    assertEquals(blocked, []);
  });
});

Deno.test("relay - TLS without a readable name is refused, never dialed", async () => {
  const hello = await realClientHello("api.test");
  // The handshake cut after its header, then an alert record: the name is never shown.
  const cut = new Uint8Array([
    ...splitIntoRecords(hello, [4]).subarray(0, 9),
    0x15,
    3,
    3,
    0,
    2,
    1,
    0,
  ]);
  await assertRefused(cut, "TLS record of type 21 before the ClientHello ended");
});

Deno.test("relay - a silent start does not end the checks: TLS sent later is still read", async () => {
  await using server = new RecordingServer("http");
  const hello = await realClientHello("evil.test");
  await withRelay({ policy: API, silentStartMs: 200 }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    // Silent until the relay gave up waiting and dialed (a server-first protocol would).
    await server.until(() => server.received.length === 1, "the dial after the silent start");
    s.write(hello);
    await s.reset();
    assert(blocked.some((l) => l.startsWith("shuru: blocked evil.test:")), String(blocked));
    assertEquals(server.all, "");
  });
});

Deno.test("relay - a silent start does not end the checks: HTTP sent later is still read", async () => {
  await using server = new RecordingServer("http");
  await withRelay({ policy: API, silentStartMs: 200 }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    await server.until(() => server.received.length === 1, "the dial after the silent start");
    s.write("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    await s.reset();
    assert(
      blocked.some((l) => l.includes("evil.test") && l.includes("HTTP Host")),
      String(blocked),
    );
    assertEquals(server.all, "");
  });
});

Deno.test("relay - every keep-alive request is checked, not only the first", async () => {
  await using server = new RecordingServer("http");
  await withRelay({ policy: API }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    const first = "GET /1 HTTP/1.1\r\nHost: api.test\r\n\r\n";
    s.write(first);
    await s.receive((t) => t.endsWith("ok"), "the first response");
    s.write("GET /2 HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    await s.reset();
    assert(blocked.some((l) => l.startsWith("shuru: blocked evil.test:")), String(blocked));
    assertEquals(server.all, first);
  });
});

Deno.test("relay - an absolute-form target must name the Host", async () => {
  await assertRefused(
    "GET http://evil.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n",
    "HTTP request target names another host than its Host header",
  );
});

Deno.test("relay - two Host headers are refused", async () => {
  await assertRefused(
    "GET / HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n",
    "HTTP request with 2 Host headers",
  );
});

Deno.test("relay - bare-LF heads are refused at once", async () => {
  await assertRefused(
    "GET / HTTP/1.1\nHost: evil.test\n\n",
    "HTTP request head has a line ending in a bare LF",
  );
});

Deno.test("relay - a Host after 16 KiB of head is still read", async () => {
  await assertRefused(
    `GET / HTTP/1.1\r\nX-Pad: ${"a".repeat(17 * 1024)}\r\nHost: evil.test\r\n\r\n`,
    "shuru: blocked evil.test:",
  );
});

Deno.test("relay - request bodies are followed to the next request (chunked, length)", async () => {
  await using server = new RecordingServer("http");
  await withRelay({ policy: API }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    // The bodies hold text that looks like a request for another host: it is body, not a head.
    const fake = "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
    const sent = `POST /a HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `${fake.length.toString(16)}\r\n${fake}\r\n0\r\n\r\n` +
      `POST /b HTTP/1.1\r\nHost: api.test\r\nContent-Length: ${fake.length}\r\n\r\n${fake}` +
      "GET /c HTTP/1.1\r\nHost: API.test.\r\n\r\n";
    s.write(sent);
    await server.until(() => server.all === sent, "all three requests");
    s.write("GET /d HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    await s.reset();
    assertEquals(server.all, sent);
    assertEquals(blocked.length, 1, String(blocked));
  });
});

Deno.test("relay - an upgrade holds the guest's bytes until the 101, then passes them", async () => {
  await using server = new RecordingServer("http");
  await withRelay({ policy: API }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    const upgrade = "GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\n" +
      "Upgrade: websocket\r\n\r\n";
    const frame = "\x02\x05hello, not HTTP"; // (ASCII, so the text comparison holds)
    s.write(upgrade + frame);
    await server.until(() => server.all === upgrade + frame, "the upgrade and the frame");
    assertEquals(server.earlyAfterUpgrade, false, "the frame went on before the 101");
    assertEquals(blocked, []);
  });
});

Deno.test("relay - an upgrade to HTTP/2 (h2c) is refused", async () => {
  await assertRefused(
    "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
      "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    "switch to HTTP/2",
  );
});

Deno.test("relay - a server-first protocol to an allowed name works (banner, then commands)", async () => {
  await using server = new RecordingServer("banner");
  await withRelay({ policy: API, silentStartMs: 200 }, async ({ guest, blocked }) => {
    const s = await open(guest, "api.test", server.port);
    await s.receive((t) => t === "220 ready\r\n", "the banner");
    s.write("EHLO guest\r\n");
    await server.until(() => server.all === "EHLO guest\r\n", "the command");
    assertEquals(blocked, []);
  });
});

Deno.test("relay - an exact allowed name resolving to a loopback address is refused", async () => {
  await using server = new RecordingServer("http");
  await withRelay({
    policy: { allowHosts: ["db.test"] },
    // The name's own DNS points it at the host's loopback (rebinding, a CNAME inward).
    resolve: (name) => Promise.resolve(name === "db.test" ? [parseIpv4("127.0.0.1")] : []),
  }, async ({ guest, blocked }) => {
    const answer = await guest.resolve("db.test");
    const s = guest.connect(answer.addresses[0]!, server.port);
    assertEquals(await s.opened(), "reset");
    assert(
      blocked.some((l) =>
        l.startsWith(`shuru: blocked db.test:${server.port} (db.test resolved to 127.0.0.1, a`)
      ),
      String(blocked),
    );
    assertEquals(server.received.length, 0);
  });
});
