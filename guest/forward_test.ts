import { assertEquals, assertRejects } from "../tests/_assert.ts";
import type { AgentError } from "../proto/errors.ts";
import { connectGuestPort } from "./forward.ts";

Deno.test("connectGuestPort - reaches a TCP server and carries bytes both ways", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const served = (async () => {
    const c = await listener.accept();
    const buf = new Uint8Array(5);
    let n = 0;
    while (n < 5) n += (await c.read(buf.subarray(n))) ?? 0;
    await c.write(new TextEncoder().encode(`echo:${new TextDecoder().decode(buf)}`));
    c.close();
  })();
  const conn = await connectGuestPort(port);
  await conn.write(new TextEncoder().encode("hello"));
  let text = "";
  for await (const chunk of conn.readable) text += new TextDecoder().decode(chunk);
  assertEquals(text, "echo:hello");
  await served;
});

Deno.test("connectGuestPort - closed port is connection_refused; bad port invalid", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const e = await assertRejects(
    () => connectGuestPort(port),
    `Cannot connect to 127.0.0.1:${port}`,
  );
  assertEquals((e as AgentError).code, "connection_refused");
  const b = await assertRejects(() => connectGuestPort(70000), "not in 1..65535");
  assertEquals((b as AgentError).code, "invalid_argument");
});
