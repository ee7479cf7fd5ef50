import { assertEquals } from "../../tests/assert.ts";
import { RequestInjector, type SecretPair } from "./inject.ts";

const PH = "sk-PLACEHOLDER0123456789ab";
const VALUE = "sk-real-value-9876543210";
const HEADER: SecretPair = { placeholder: PH, value: VALUE };
const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("RequestInjector - credential fields take the placeholder anywhere, others only whole", () => {
  const i = new RequestInjector([HEADER]);
  const cases: [string, string, string][] = [
    ["Authorization", `Bearer ${PH}`, `Bearer ${VALUE}`],
    ["authorization", `token ${PH}`, `token ${VALUE}`],
    ["Authorization", `Basic ${btoa(`u:${PH}`)}`, `Basic ${btoa(`u:${VALUE}`)}`],
    ["Proxy-Authorization", `Bearer ${PH}`, `Bearer ${VALUE}`],
    ["X-API-Key", PH, VALUE],
    ["api-key", `k=${PH}`, `k=${VALUE}`],
    ["X-Whatever", PH, VALUE],
    ["X-Whatever", `Bearer ${PH}`, `Bearer ${VALUE}`],
    ["X-Whatever", `BASIC  ${PH}`, `BASIC  ${VALUE}`],
    ["X-Whatever", `${PH} please`, `${PH} please`],
    ["X-Whatever", `token ${PH}`, `token ${PH}`],
    ["X-Whatever", `Basic ${btoa(`u:${PH}`)}`, `Basic ${btoa(`u:${PH}`)}`],
    ["Cookie", `key=${PH}`, `key=${PH}`],
  ];
  for (const [name, value, expected] of cases) {
    assertEquals(i.field(name, value), expected, `${name}: ${value}`);
  }
  assertEquals(i.target(`/v1/${PH}?key=${PH}`), `/v1/${PH}?key=${PH}`);
  assertEquals(i.bodyIsIdentity, true);
  assertEquals(dec.decode(i.body(enc.encode(PH))), PH);
  assertEquals(i.trailer(PH), PH);
});

Deno.test("RequestInjector - query and body are opt-in; the path never changes", () => {
  const i = new RequestInjector([
    { placeholder: PH, value: "a b", inject: ["query", "body"] },
  ]);
  assertEquals(i.target(`/p/${PH}?k=${PH}&j=${PH}`), `/p/${PH}?k=a%20b&j=a%20b`);
  assertEquals(i.target(`/p/${PH}`), `/p/${PH}`);
  assertEquals(dec.decode(i.body(enc.encode(`{"k":"${PH}"}`))), `{"k":"a b"}`);
  assertEquals(i.trailer(`x ${PH}`), "x a b");
  assertEquals(i.field("Authorization", `Bearer ${PH}`), `Bearer ${PH}`, "no header opt-in");
});

Deno.test("RequestInjector - a withheld secret stays a placeholder and is reported once", () => {
  const seen: string[] = [];
  const i = new RequestInjector([], {
    withhold: [{ ...HEADER, inject: ["header", "query"] }],
    onWithheld: (p) => seen.push(p),
  });
  assertEquals(i.field("X-Note", `say ${PH}`), `say ${PH}`);
  assertEquals(seen, [], "not a place the value would go");
  assertEquals(i.field("X-Whatever", PH), PH);
  assertEquals(i.field("Authorization", `Bearer ${PH}`), `Bearer ${PH}`);
  assertEquals(i.target(`/?k=${PH}`), `/?k=${PH}`);
  assertEquals(seen, [PH]);
});
