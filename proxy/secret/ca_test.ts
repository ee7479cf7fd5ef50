import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import * as x509 from "@peculiar/x509";
import { CertificateAuthority, certificateSerial } from "./ca.ts";

/** openssl verifies a leaf against the CA for a host name: a real verifier, not ours. */
async function opensslVerify(ca: string, chain: string, name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "shuru-ca-test-" });
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, ca);
    await Deno.writeTextFile(
      `${dir}/leaf.pem`,
      chain.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!,
    );
    const out = await new Deno.Command("openssl", {
      args: [
        "verify",
        "-x509_strict",
        "-CAfile",
        `${dir}/ca.pem`,
        "-verify_hostname",
        name,
        `${dir}/leaf.pem`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output().catch(() => {
      throw new Error("ca_test needs openssl: apt-get install openssl");
    });
    return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("CA: openssl accepts a leaf for its name (strict X.509) and rejects it for another", async () => {
  const ca = await CertificateAuthority.create();
  const leaf = await ca.leaf("api.example.com");
  assert(leaf.keyPem.startsWith("-----BEGIN PRIVATE KEY-----"));
  assert(leaf.certPem.endsWith(ca.certificatePem), "the chain ends with the CA");
  assert(
    (await opensslVerify(ca.certificatePem, leaf.certPem, "api.example.com")).includes(": OK"),
  );
  const wrong = await opensslVerify(ca.certificatePem, leaf.certPem, "other.example.com");
  assert(!wrong.includes(": OK"), wrong);
});

Deno.test("CA: another run's CA does not vouch for this run's leaves", async () => {
  const a = await CertificateAuthority.create();
  const b = await CertificateAuthority.create();
  const out = await opensslVerify(b.certificatePem, (await a.leaf("x.test")).certPem, "x.test");
  assert(!out.includes(": OK"), out);
});

Deno.test("CA: leaves are cached per name (case-insensitive) and bounded", async () => {
  const ca = await CertificateAuthority.create({ maxLeaves: 2 });
  const first = await ca.leaf("A.test");
  assertEquals(await ca.leaf("a.test"), first);
  await ca.leaf("b.test");
  await ca.leaf("c.test"); // drops a.test
  assert((await ca.leaf("a.test")).keyPem !== first.keyPem, "made again after eviction");
});

Deno.test("CA: a TLS handshake with the leaf verifies against the CA (Deno.connectTls)", async () => {
  const ca = await CertificateAuthority.create();
  const leaf = await ca.leaf("localhost");
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    key: leaf.keyPem,
    cert: leaf.certPem,
  });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    const conn = await listener.accept();
    await conn.write(new TextEncoder().encode("hello"));
    conn.close();
  })();
  const client = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [ca.certificatePem],
  });
  const buf = new Uint8Array(5);
  await client.read(buf);
  assertEquals(new TextDecoder().decode(buf), "hello");
  client.close();
  await serving;
  listener.close();
  // Without the CA the same handshake fails: the test can tell trust from no trust.
  const l2 = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    key: leaf.keyPem,
    cert: leaf.certPem,
  });
  const p2 = (l2.addr as Deno.NetAddr).port;
  const accepted = l2.accept().then((c) => c.handshake().finally(() => c.close())).catch(() => {});
  await assertRejects(async () => {
    const c = await Deno.connectTls({ hostname: "localhost", port: p2 });
    try {
      await c.handshake();
    } finally {
      c.close();
    }
  });
  await accepted;
  l2.close();
});

Deno.test("CA: serial numbers are minimal positive DER integers, which openssl reads", async () => {
  const keys = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign", "verify"],
  );
  const dir = await Deno.makeTempDir({ prefix: "shuru-ca-serial-" });
  try {
    // Random bytes a serial can start with: a zero byte, a sign bit, then a small byte.
    for (const first of [0x00, 0x01, 0x7f, 0x80, 0xff]) {
      const random = new Uint8Array(16).fill(0x05);
      random[0] = first;
      const serial = certificateSerial(random);
      assertEquals(serial.length, 32);
      assert(/^[4-7]/.test(serial), `serial ${serial}: not a minimal positive INTEGER`);
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: serial,
        name: "CN=serial test",
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 60_000),
        keys,
        signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      });
      await Deno.writeTextFile(`${dir}/cert.pem`, cert.toString("pem") + "\n");
      const out = await new Deno.Command("openssl", {
        args: ["x509", "-in", `${dir}/cert.pem`, "-noout", "-serial"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assertEquals(said.trim(), `serial=${serial.toUpperCase()}`, `first random byte ${first}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
