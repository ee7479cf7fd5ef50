import { assertEquals } from "../../tests/_assert.ts";
import { RTTE_INITIAL_RTO, RTTE_MAX_RTO, RTTE_MIN_RTO, RttEstimator } from "./rtt.ts";

Deno.test("RttEstimator - initial RTO is 1 s (RFC 6298 2.1)", () => {
  assertEquals(new RttEstimator().rto, RTTE_INITIAL_RTO);
});

Deno.test("RttEstimator - first sample sets SRTT=R, RTTVAR=R/2 (RFC 6298 2.2)", () => {
  const r = new RttEstimator();
  r.sample(400);
  assertEquals(r.srtt, 400);
  assertEquals(r.rto, 400 + 4 * 200);
});

Deno.test("RttEstimator - later samples smooth with alpha 1/8, beta 1/4 (RFC 6298 2.3)", () => {
  const r = new RttEstimator();
  r.sample(400);
  r.sample(800);
  // RTTVAR = 3/4*200 + 1/4*|400-800| = 250; SRTT = 7/8*400 + 1/8*800 = 450.
  assertEquals(r.srtt, 450);
  assertEquals(r.rto, 450 + 4 * 250);
});

Deno.test("RttEstimator - bounded below by the minimum and above by the maximum", () => {
  const r = new RttEstimator();
  r.sample(1);
  assertEquals(r.rto, RTTE_MIN_RTO);
  for (let i = 0; i < 20; i++) r.onRto();
  assertEquals(r.rto, RTTE_MAX_RTO);
});

Deno.test("RttEstimator - onSend/onAck time one segment; Karn's rule skips retransmissions", () => {
  const r = new RttEstimator();
  r.onSend(1000, 100);
  r.onSend(1010, 200); // already timing: ignored
  r.onAck(1050, 99); // does not cover the timed segment
  assertEquals(r.srtt, undefined);
  r.onAck(1300, 150);
  assertEquals(r.srtt, 300);
  r.onSend(2000, 300);
  r.onRetransmit();
  r.onAck(2500, 300);
  assertEquals(r.srtt, 300);
});

Deno.test("RttEstimator - onRto doubles (RFC 6298 5.5)", () => {
  const r = new RttEstimator();
  r.onRto();
  assertEquals(r.rto, 2 * RTTE_INITIAL_RTO);
});
