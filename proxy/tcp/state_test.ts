import { assertEquals } from "../../tests/_assert.ts";
import { canReceive, canSend, isSynchronized, TCP_STATES } from "./state.ts";

Deno.test("TcpState - the RFC 793 names, and which states are synchronized", () => {
  assertEquals(TCP_STATES.length, 11);
  assertEquals(TCP_STATES.filter(isSynchronized), [
    "ESTABLISHED",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "CLOSING",
    "LAST-ACK",
    "TIME-WAIT",
  ]);
  assertEquals(TCP_STATES.filter(canReceive), ["ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2"]);
  assertEquals(TCP_STATES.filter(canSend), ["ESTABLISHED", "CLOSE-WAIT"]);
});
