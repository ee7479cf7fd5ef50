import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { MAX_HEADER_COUNT } from "./constants.ts";
import { HttpRelayError } from "./error.ts";
import {
  bytesToByteString,
  byteStringToBytes,
  findHeadEnd,
  headerValue,
  isTextualContentType,
  narrowAcceptEncoding,
  parseRequestHead,
  parseResponseHead,
  requestBodyFraming,
  type RequestHead,
  responseBodyFraming,
  type ResponseHead,
  rewriteBasicCredentials,
  serializeRequestHead,
  serializeResponseHead,
} from "./head.ts";

const enc = new TextEncoder();

function request(text: string): RequestHead {
  return parseRequestHead(enc.encode(text));
}

function response(text: string): ResponseHead {
  return parseResponseHead(enc.encode(text));
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof HttpRelayError) return e.code;
    throw e;
  }
  throw new Error("expected an HttpRelayError");
}

Deno.test("findHeadEnd - finds CRLF CRLF, resumes, and ignores bare LF pairs", () => {
  const bytes = enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY");
  assertEquals(findHeadEnd(bytes), bytes.length - 4);
  assertEquals(findHeadEnd(bytes, 10), bytes.length - 4);
  assertEquals(findHeadEnd(enc.encode("GET / HTTP/1.1\r\nHost: a\r\n")), -1);
  assertEquals(findHeadEnd(enc.encode("GET / HTTP/1.1\n\n")), -1);
  // Every split point of the terminator, searched incrementally as the reader does.
  for (let cut = 0; cut <= bytes.length; cut++) {
    const first = findHeadEnd(bytes.subarray(0, cut));
    const end = first !== -1 ? first : findHeadEnd(bytes, Math.max(0, cut - 3));
    assertEquals(end, bytes.length - 4, `cut ${cut}`);
  }
});

Deno.test("parseRequestHead - round trip keeps order, case and obs-text bytes", () => {
  const raw = new Uint8Array([
    ...enc.encode("POST /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Mixed-Case:  v1 \r\nX-Bin: "),
    0xe9,
    0xff,
    ...enc.encode("\r\nX-Mixed-Case: v2\r\n\r\n"),
  ]);
  const head = parseRequestHead(raw);
  assertEquals(head.method, "POST");
  assertEquals(head.target, "/a?b=c");
  assertEquals(head.version, "HTTP/1.1");
  assertEquals(head.headers[1], ["X-Mixed-Case", "v1"]);
  assertEquals(head.headers[2], ["X-Bin", "\u00e9\u00ff"]);
  assertEquals(headerValue(head.headers, "x-mixed-case"), "v1, v2");
  const again = serializeRequestHead(head);
  assertEquals(parseRequestHead(again), head);
});

Deno.test("parseRequestHead - malformed heads are refused with a code", () => {
  assertEquals(codeOf(() => request("GET /\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET  / HTTP/1.1\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("G(T / HTTP/1.1\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET /\u00e9 HTTP/1.1\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nName : x\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nA: x\0y\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nA: x\ry\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\nA: x\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\nA: x\r\n b\r\n\r\n")), "obs-fold");
  assertEquals(codeOf(() => request("GET / HTTP/2.0\r\n\r\n")), "unsupported-version");
  assertEquals(codeOf(() => request("GET / HTTPS/1.1\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => request("GET / HTTP/1.1\r\n\r\nextra")), "malformed-head");
  const many = "GET / HTTP/1.1\r\n" + "A: b\r\n".repeat(MAX_HEADER_COUNT + 1) + "\r\n";
  assertEquals(codeOf(() => request(many)), "too-many-headers");
  assertEquals(
    request("GET / HTTP/1.1\r\n" + "A: b\r\n".repeat(MAX_HEADER_COUNT) + "\r\n").headers.length,
    MAX_HEADER_COUNT,
  );
});

Deno.test("parseResponseHead - status line forms", () => {
  const r = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
  assertEquals([r.status, r.reason, r.version], [200, "OK", "HTTP/1.1"]);
  assertEquals(response("HTTP/1.1 204\r\n\r\n").reason, "");
  assertEquals(response("HTTP/1.0 404 Not  Found\r\n\r\n").reason, "Not  Found");
  assertEquals(codeOf(() => response("HTTP/1.1 20 OK\r\n\r\n")), "malformed-head");
  assertEquals(codeOf(() => response("ICY 200 OK\r\n\r\n")), "malformed-head");
  const head: ResponseHead = {
    version: "HTTP/1.1",
    status: 101,
    reason: "Switching Protocols",
    headers: [["A", "b"]],
  };
  assertEquals(parseResponseHead(serializeResponseHead(head)), head);
});

Deno.test("byte strings - every byte survives", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assertEquals(byteStringToBytes(bytesToByteString(all)), all);
  assertThrows(() => byteStringToBytes("\u0100"), "not a byte");
});

Deno.test("requestBodyFraming - strict RFC 9112 §6.3", () => {
  assertEquals(requestBodyFraming(request("GET / HTTP/1.1\r\n\r\n")), { kind: "none" });
  assertEquals(requestBodyFraming(request("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")), {
    kind: "none",
  });
  assertEquals(requestBodyFraming(request("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")), {
    kind: "length",
    length: 12,
  });
  assertEquals(requestBodyFraming(request("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n")), {
    kind: "length",
    length: 7,
  });
  assertEquals(
    requestBodyFraming(request("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")),
    {
      kind: "chunked",
    },
  );
  const bad = (text: string) => codeOf(() => requestBodyFraming(request(text)));
  assertEquals(bad("POST / HTTP/1.1\r\nContent-Length: 7, 8\r\n\r\n"), "bad-framing");
  assertEquals(bad("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), "bad-framing");
  assertEquals(bad("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), "bad-framing");
  assertEquals(bad("POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n"), "bad-framing");
  assertEquals(bad("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), "bad-framing");
  assertEquals(
    bad("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "bad-framing",
  );
  assertEquals(bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), "bad-framing");
  assertEquals(
    bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
    "unsupported-transfer-coding",
  );
  assertEquals(
    bad("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
    "unsupported-transfer-coding",
  );
  assertEquals(bad("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"), "unsupported-transfer-coding");
});

Deno.test("responseBodyFraming - no body for HEAD, 1xx, 204, 304; chunked; length; close", () => {
  const ok = response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
  assertEquals(responseBodyFraming(ok, "GET"), { kind: "length", length: 10 });
  assertEquals(responseBodyFraming(ok, "HEAD"), { kind: "none" });
  for (const status of [100, 103, 204, 304]) {
    assertEquals(
      responseBodyFraming(response(`HTTP/1.1 ${status} X\r\nContent-Length: 10\r\n\r\n`), "GET"),
      {
        kind: "none",
      },
    );
  }
  assertEquals(
    responseBodyFraming(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "GET"),
    {
      kind: "chunked",
    },
  );
  assertEquals(responseBodyFraming(response("HTTP/1.1 200 OK\r\n\r\n"), "GET"), { kind: "close" });
  assertEquals(
    codeOf(() =>
      responseBodyFraming(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), "GET")
    ),
    "unsupported-transfer-coding",
  );
});

Deno.test("rewriteBasicCredentials - decode, replace, re-encode; others untouched", () => {
  const swap = (s: string) => s.replaceAll("PH", "secret");
  assertEquals(
    rewriteBasicCredentials(`Basic ${btoa("user:PH")}`, swap),
    `Basic ${btoa("user:secret")}`,
  );
  assertEquals(
    rewriteBasicCredentials(`basic  ${btoa("PH:x")}`, swap),
    `basic  ${btoa("secret:x")}`,
  );
  assertEquals(rewriteBasicCredentials("Bearer PH", swap), "Bearer PH");
  assertEquals(rewriteBasicCredentials("Basic !!!notbase64", swap), "Basic !!!notbase64");
  assertEquals(rewriteBasicCredentials("Basic abc", swap), "Basic abc", "bad padding length");
  const unchanged = `Basic ${btoa("user:pass")}`;
  assertEquals(rewriteBasicCredentials(unchanged, swap), unchanged);
});

Deno.test("narrowAcceptEncoding - keeps only decodable codings", () => {
  assertEquals(narrowAcceptEncoding("gzip, deflate, br, zstd"), "gzip, deflate, br");
  assertEquals(narrowAcceptEncoding("br;q=1.0, zstd;q=0.9, *;q=0.1"), "br;q=1.0");
  assertEquals(narrowAcceptEncoding("zstd"), "identity");
  assertEquals(narrowAcceptEncoding(undefined), "identity");
});

Deno.test("isTextualContentType - the textual media types", () => {
  for (
    const t of [
      "text/plain",
      "Text/HTML; charset=utf-8",
      "application/json",
      "application/vnd.api+json",
      "application/x-www-form-urlencoded",
      "application/xml",
      "image/svg+xml",
      "multipart/form-data; boundary=x",
      undefined,
    ]
  ) {
    assert(isTextualContentType(t), String(t));
  }
  for (
    const t of ["application/octet-stream", "image/png", "application/gzip", "application/jsonx"]
  ) {
    assert(!isTextualContentType(t), t);
  }
});

Deno.test("parseRequestHead / parseResponseHead - random bytes only ever raise HttpRelayError", () => {
  let seed = 42;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const pieces = [
    "GET ",
    "/",
    " HTTP/1.1",
    "HTTP/1.1 ",
    "200",
    " OK",
    "\r\n",
    "\n",
    "\r",
    ":",
    " ",
    "\t",
    "A",
    "\0",
    "\xff",
  ];
  for (let round = 0; round < 5000; round++) {
    let text = "";
    for (let i = rand(20); i > 0; i--) text += pieces[rand(pieces.length)];
    const bytes = byteStringToBytes(text + "\r\n\r\n");
    for (const parse of [parseRequestHead, parseResponseHead]) {
      try {
        const head = parse(bytes);
        if ("method" in head) requestBodyFraming(head);
        else responseBodyFraming(head, "GET");
      } catch (e) {
        if (!(e instanceof HttpRelayError)) throw e;
      }
    }
  }
});
