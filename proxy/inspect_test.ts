import { assertEquals } from "../tests/_assert.ts";
import { type InspectEvent, StreamInspector } from "./inspect.ts";
import { realClientHello, splitIntoRecords } from "./_test_tls.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder("latin1").decode(b);

/** Events with pass bytes as text, adjacent passes merged. */
function summary(events: InspectEvent[]): Array<string> {
  const out: string[] = [];
  for (const e of events) {
    const item = e.kind === "pass"
      ? `pass:${dec(e.bytes)}`
      : e.kind === "name"
      ? `name:${e.via}:${e.name ?? "-"}`
      : `refuse:${e.reason}`;
    const last = out.length - 1;
    if (item.startsWith("pass:") && out[last]?.startsWith("pass:")) out[last] += item.slice(5);
    else out.push(item);
  }
  return out;
}

function inspect(input: string | Uint8Array, checkNames = true): string[] {
  return summary(
    new StreamInspector({ checkNames }).push(typeof input === "string" ? enc(input) : input),
  );
}

/** The same input one byte at a time. */
function inspectBytewise(input: string | Uint8Array, checkNames = true): string[] {
  const bytes = typeof input === "string" ? enc(input) : input;
  const ins = new StreamInspector({ checkNames });
  const events: InspectEvent[] = [];
  for (let i = 0; i < bytes.length; i++) events.push(...ins.push(bytes.slice(i, i + 1)));
  return summary(events);
}

Deno.test("StreamInspector - every HTTP request's Host is a name event before its bytes", () => {
  const one = "GET /1 HTTP/1.1\r\nHost: API.Test.:8080\r\n\r\n";
  const two = "POST /2 HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\n\r\nhello";
  // An empty line before a request passes on its own (servers skip it).
  const three = "GET http://c.test:81/x HTTP/1.1\r\nHost: c.test:81\r\n\r\n";
  const expected = [
    "name:http:api.test",
    `pass:${one}`,
    "name:http:b.test",
    `pass:${two}\r\n`,
    "name:http:c.test",
    `pass:${three}`,
  ];
  assertEquals(inspect(one + two + "\r\n" + three), expected);
  assertEquals(inspectBytewise(one + two + "\r\n" + three), expected);
});

Deno.test("StreamInspector - a chunked body is followed, not read as a head", () => {
  const fake = "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
  const req = "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
    `${fake.length.toString(16)};ext=1\r\n${fake}\r\n0\r\nX-Trailer: 1\r\n\r\n`;
  const next = "GET / HTTP/1.1\r\nHost: b.test\r\n\r\n";
  const expected = ["name:http:a.test", `pass:${req}`, "name:http:b.test", `pass:${next}`];
  assertEquals(inspect(req + next), expected);
  assertEquals(inspectBytewise(req + next), expected);
});

Deno.test("StreamInspector - heads that cannot be checked are refused, with the reason", () => {
  const cases: Array<[string, string]> = [
    ["GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "with 2 Host headers"],
    ["GET / HTTP/1.1\r\nX: y\r\n\r\n", "without a Host header"],
    ["GET http://evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "names another host"],
    ["GET http://a.test@evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "user information"],
    ["CONNECT evil.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n", "names another host"],
    ["GET evil.test HTTP/1.1\r\nHost: a.test\r\n\r\n", "not origin-form"],
    ["GET * HTTP/1.1\r\nHost: a.test\r\n\r\n", "outside OPTIONS"],
    ["GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "IPv6"],
    ["GET / HTTP/1.1\r\nHost: evil test\r\n\r\n", "not a valid host name"],
    ["GET / HTTP/1.1\r\nHost: a.test\r\n folded\r\n\r\n", "cannot be checked"],
    ["GET / HTTP/1.1\nHost: a.test\n\n", "bare LF"],
    ["GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n", "bare"],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "cannot be checked"],
    ["GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: h2c\r\n\r\n", "HTTP/2"],
    [
      "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "cannot be followed",
    ],
    [`GET / HTTP/1.1\r\nX: ${"a".repeat(70 * 1024)}`, "larger than 64 KiB"],
  ];
  for (const [input, words] of cases) {
    for (const got of [inspect(input), inspectBytewise(input)]) {
      const last = got[got.length - 1] ?? "";
      assertEquals(last.startsWith("refuse:") && last.includes(words), true, `${input}: ${got}`);
      assertEquals(got.filter((g) => g.startsWith("pass:") && g.length > 7).length, 0, input);
    }
  }
  // A later request's refusal leaves the earlier ones passed.
  const got = inspect("GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1\nHost: b.test\n\n");
  assertEquals(got.length, 3);
  assertEquals(got[2]!.startsWith("refuse:"), true);
});

Deno.test("StreamInspector - OPTIONS *, CONNECT to its own Host, IPv4 Hosts are names", () => {
  assertEquals(inspect("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")[0], "name:http:a.test");
  assertEquals(inspect("GET / HTTP/1.1\r\nHost: 10.1.2.3:80\r\n\r\n")[0], "name:http:10.1.2.3");
  const ins = new StreamInspector({ checkNames: true });
  const connect = "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n";
  assertEquals(summary(ins.push(enc(connect + "tunnelled"))), [
    "name:http:a.test",
    `pass:${connect}`,
  ]);
  assertEquals(ins.waiting, true);
  ins.observeResponse(enc("HTTP/1.1 200 Connection established\r\n\r\n"));
  assertEquals(summary(ins.push(new Uint8Array(0))), ["pass:tunnelled"]);
});

Deno.test("StreamInspector - an upgrade holds bytes until the answer: 101 opens, other resumes", () => {
  const upgrade =
    "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
  const evil = "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
  // Granted (after a 100 Continue): the rest is a tunnel, unparsed.
  const granted = new StreamInspector({ checkNames: true });
  assertEquals(summary(granted.push(enc(upgrade + evil))), ["name:http:a.test", `pass:${upgrade}`]);
  assertEquals(granted.waiting, true);
  assertEquals(granted.push(enc("more")), []);
  granted.observeResponse(enc("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching"));
  assertEquals(granted.waiting, true);
  granted.observeResponse(enc(" Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"));
  assertEquals(granted.waiting, false);
  assertEquals(summary(granted.push(new Uint8Array(0))), [`pass:${evil}more`]);
  // Declined: the held bytes are the next request, checked as such.
  const declined = new StreamInspector({ checkNames: true });
  declined.push(enc(upgrade + evil));
  declined.observeResponse(enc("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  assertEquals(summary(declined.push(new Uint8Array(0))), ["name:http:evil.test", `pass:${evil}`]);
  // Earlier responses (pipelined requests) are skipped by their framing first.
  const pipelined = new StreamInspector({ checkNames: true });
  const get = "GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n";
  pipelined.push(enc(get + upgrade + evil));
  pipelined.observeResponse(
    enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHTTP/\r\n0\r\n\r\n"),
  );
  assertEquals(pipelined.waiting, true);
  pipelined.observeResponse(enc("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"));
  assertEquals(summary(pipelined.push(new Uint8Array(0)))[0], "name:http:evil.test");
  // A response that does not parse: the upgrade's answer cannot be known, so refuse.
  const lost = new StreamInspector({ checkNames: true });
  lost.push(enc(upgrade + evil));
  lost.observeResponse(enc("HTTP/1.1 101 Switching\nProtocols\n\n"));
  lost.observeResponse(enc("\r\n\r\n"));
  assertEquals(summary(lost.push(new Uint8Array(0)))[0]!.startsWith("refuse:"), true);
});

Deno.test("StreamInspector - TLS: the name of a split hello, then everything passes", async () => {
  const hello = splitIntoRecords(await realClientHello("Api.Test"), [7, 30]);
  const after = new Uint8Array([0x17, 3, 3, 0, 2, 9, 9]);
  const input = new Uint8Array([...hello, ...after]);
  const expected = ["name:tls:api.test", `pass:${dec(input)}`];
  assertEquals(inspect(input), expected);
  assertEquals(inspectBytewise(input), expected);
});

Deno.test("StreamInspector - TLS names outside the host name syntax are refused", async () => {
  const hello = await realClientHello("aaaa.test");
  const at = dec(hello).indexOf("aaaa.test");
  for (const bad of ["aa a.test", "aa\0a.test", "aaaa.tes\xe9", "a..a.test"]) {
    const forged = hello.slice();
    for (let i = 0; i < bad.length; i++) forged[at + i] = bad.charCodeAt(i);
    assertEquals(inspect(forged), ["refuse:TLS server name is not a valid host name"], bad);
  }
  const dotted = hello.slice();
  dotted[at + 8] = ".".charCodeAt(0); // "aaaa.tes." → one trailing dot removed
  assertEquals(inspect(dotted)[0], "name:tls:aaaa.tes");
});

Deno.test("StreamInspector - other protocols pass; without name checks only the kind is read", () => {
  assertEquals(inspect("EHLO me\r\nMAIL FROM:<a@b>\r\n"), ["pass:EHLO me\r\nMAIL FROM:<a@b>\r\n"]);
  const ins = new StreamInspector({ checkNames: true });
  assertEquals(ins.push(enc("GET / HT")), []); // held until the line shows what it is
  assertEquals(ins.protocol, "unknown");
  assertEquals(ins.heldBytes, 8);
  const secretsOnly = new StreamInspector({ checkNames: false });
  const evil = "GET / HTTP/1.1\r\nHost: evil.test\r\nHost: x\r\n\r\n";
  assertEquals(summary(secretsOnly.push(enc(evil))), [`pass:${evil}`]);
  assertEquals(secretsOnly.protocol, "http");
});
