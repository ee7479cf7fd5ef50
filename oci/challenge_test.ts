import { assertEquals } from "../tests/assert.ts";
import { parseChallenges } from "./challenge.ts";

Deno.test("parseChallenges - Bearer with realm, service and scope", () => {
  assertEquals(
    parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",' +
        'scope="repository:team/env:pull,push"',
    ),
    [{
      scheme: "bearer",
      params: {
        realm: "https://auth.example/token",
        service: "registry.example",
        scope: "repository:team/env:pull,push",
      },
    }],
  );
});

Deno.test("parseChallenges - Basic, several challenges, escapes and unquoted values", () => {
  assertEquals(parseChallenges('Basic realm="Registry Realm"'), [
    { scheme: "basic", params: { realm: "Registry Realm" } },
  ]);
  assertEquals(parseChallenges('Basic realm="a\\"b", Bearer realm=https://x/t, service=s'), [
    { scheme: "basic", params: { realm: 'a"b' } },
    { scheme: "bearer", params: { realm: "https://x/t", service: "s" } },
  ]);
});

Deno.test("parseChallenges - error parameter and garbage", () => {
  const [c] = parseChallenges(
    'Bearer realm="r",error="insufficient_scope",scope="repository:x:push"',
  );
  assertEquals(c?.params.error, "insufficient_scope");
  assertEquals(parseChallenges(""), []);
  assertEquals(parseChallenges("   ,, "), []);
  assertEquals(parseChallenges('"unterminated').length, 0);
});
