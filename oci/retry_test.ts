import { assertEquals } from "../tests/assert.ts";
import { DEFAULT_RETRY, isRetryableStatus, parseRetryAfter, retryDelay } from "./retry.ts";

Deno.test("retryDelay - doubles from the base and stops after the last attempt", () => {
  const net = { kind: "network" } as const;
  assertEquals(
    [1, 2, 3, 4].map((a) => retryDelay(DEFAULT_RETRY, a, net, 0.5)),
    [250, 500, 1000, 2000],
  );
  assertEquals(retryDelay(DEFAULT_RETRY, 5, net, 0.5), null);
});

Deno.test("retryDelay - jitter stays within 20 percent", () => {
  const s = { kind: "status", status: 503 } as const;
  assertEquals(retryDelay(DEFAULT_RETRY, 1, s, 0), 200);
  assertEquals(retryDelay(DEFAULT_RETRY, 1, s, 0.999), 300);
});

Deno.test("retryDelay - 4xx other than 408 and 429 are not retried", () => {
  for (const status of [400, 401, 403, 404, 416]) {
    assertEquals(retryDelay(DEFAULT_RETRY, 1, { kind: "status", status }, 0.5), null);
  }
  for (const status of [408, 429, 500, 502, 503, 504]) {
    assertEquals(isRetryableStatus(status), true);
  }
  assertEquals(isRetryableStatus(501), false);
});

Deno.test("retryDelay - Retry-After is honoured and capped", () => {
  const at = (v: string) =>
    retryDelay(DEFAULT_RETRY, 1, { kind: "status", status: 429, retryAfter: v }, 0.5);
  assertEquals(at("3"), 3000);
  assertEquals(at("3600"), DEFAULT_RETRY.maxRetryAfterMs);
  assertEquals(at("Wed, 21 Oct 2015 07:28:00 GMT"), 250);
  assertEquals(parseRetryAfter("x"), null);
});
