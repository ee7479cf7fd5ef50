/**
 * Test helpers for TLS first bytes: a real ClientHello (Deno's rustls client talking to a
 * loopback listener) and the same handshake message re-split over several TLS records, as a
 * guest hiding its server name from a one-record reader would send it.
 *
 * @module
 */

/** The first flight a real TLS client sends for `serverName` (one or more whole records). */
export async function realClientHello(serverName: string): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const accepted = listener.accept();
    const raw = await Deno.connect({ hostname: "127.0.0.1", port });
    const handshake = Deno.startTls(raw, { hostname: serverName }).then(
      (c) => c.handshake().finally(() => c.close()),
      () => {},
    ).catch(() => {});
    const server = await accepted;
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < 5 || got < 5 + ((buf[3]! << 8) | buf[4]!)) {
      const n = await server.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    server.close();
    await handshake;
    return buf.slice(0, got);
  } finally {
    listener.close();
  }
}

/**
 * The handshake message of the one-record `hello` re-split into records carrying `sizes`
 * bytes each (the last record takes the rest).
 */
export function splitIntoRecords(hello: Uint8Array, sizes: number[]): Uint8Array {
  const message = hello.subarray(5, 5 + ((hello[3]! << 8) | hello[4]!));
  const records: number[] = [];
  let off = 0;
  for (let i = 0; off < message.length; i++) {
    const size = i < sizes.length ? sizes[i]! : message.length - off;
    const part = message.subarray(off, off + size);
    records.push(0x16, hello[1]!, hello[2]!, part.length >> 8, part.length & 0xff, ...part);
    off += part.length;
  }
  return new Uint8Array(records);
}
