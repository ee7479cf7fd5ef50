import { assert, assertEquals } from "../../tests/_assert.ts";
import { TcpTimer, ZERO_WINDOW_PROBE_MAX_DELAY } from "./timer.ts";

Deno.test("TcpTimer - idle has no deadline", () => {
  const t = new TcpTimer();
  assertEquals(t.pollAt(), undefined);
  assert(!t.shouldRetransmit(1e12));
});

Deno.test("TcpTimer - retransmit keeps a running deadline unless restarted (RFC 6298 5.1, 5.3)", () => {
  const t = new TcpTimer();
  t.setForRetransmit(100, 200);
  t.setForRetransmit(150, 200);
  assertEquals(t.pollAt(), 300);
  assert(!t.shouldRetransmit(299));
  assert(t.shouldRetransmit(300));
  t.setForRetransmit(150, 200, true);
  assertEquals(t.pollAt(), 350);
  t.setForIdle();
  assertEquals(t.pollAt(), undefined);
});

Deno.test("TcpTimer - zero-window probe backs off to the maximum", () => {
  const t = new TcpTimer();
  t.setForZeroWindowProbe(0, 200);
  assert(t.shouldProbeZeroWindow(200));
  t.rearmZeroWindowProbe(200);
  assertEquals(t.pollAt(), 600);
  for (let i = 0; i < 20; i++) t.rearmZeroWindowProbe(0);
  assertEquals(t.state.kind === "zero-window-probe" && t.state.delay, ZERO_WINDOW_PROBE_MAX_DELAY);
});

Deno.test("TcpTimer - close survives setForIdle and retransmit", () => {
  const t = new TcpTimer();
  t.setForClose(10, 2000);
  t.setForIdle();
  t.setForRetransmit(20, 100);
  assert(!t.shouldClose(2009));
  assert(t.shouldClose(2010));
});
