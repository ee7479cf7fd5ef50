/**
 * The registry client (oci/) against real registries: Debian's docker-registry open, with
 * htpasswd Basic auth, with token auth (our issuer), over TLS; and behind a faulty front that
 * injects statuses, lies about sizes, corrupts and cuts bodies.
 */

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { FaultyFront, TestRegistry } from "./_registry.ts";
import {
  MEDIA_OCI_MANIFEST,
  RegistryClient,
  RegistryError,
  type RegistryErrorCode,
  sha256Digest,
} from "../oci/mod.ts";

const FAST_RETRY = { attempts: 3, baseMs: 20, maxMs: 100, maxRetryAfterMs: 200 };

function blob(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function expectCode(p: Promise<unknown>, code: RegistryErrorCode): Promise<RegistryError> {
  const err = await assertRejects(() => p);
  assert(err instanceof RegistryError, `expected a RegistryError, got ${err}`);
  assertEquals((err as RegistryError).code, code, err.message);
  assert(!err.message.includes("\n"), `one line: ${err.message}`);
  assert(err.message.startsWith("Cannot "), err.message);
  return err as RegistryError;
}

/** Pushes a blob, a manifest over it, reads both back (whole and by range). */
async function roundTrip(client: RegistryClient, repo: string): Promise<string> {
  const data = blob(3 * 65536 + 17, 7);
  const digest = await sha256Digest(data);
  assertEquals(await client.headBlob(repo, digest), null);
  await client.uploadBlob(repo, digest, data);
  assertEquals(await client.headBlob(repo, digest), data.length);
  assertEquals(await client.getBlob(repo, digest, data.length), data);
  const part = await client.getBlobRange(repo, digest, {
    offset: 65536,
    length: 65536 + 5,
    blobSize: data.length,
  });
  assertEquals(part, data.subarray(65536, 2 * 65536 + 5));
  const config = new TextEncoder().encode("{}");
  const configDigest = await sha256Digest(config);
  await client.uploadBlob(repo, configDigest, config);
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_OCI_MANIFEST,
    config: { mediaType: "application/vnd.test.config", digest: configDigest, size: 2 },
    layers: [{ mediaType: "application/vnd.test.layer", digest, size: data.length }],
  }));
  const md = await client.putManifest(repo, "v1", manifest, MEDIA_OCI_MANIFEST);
  const got = await client.getManifest(repo, "v1");
  assertEquals(got.digest, md);
  assertEquals(got.mediaType, MEDIA_OCI_MANIFEST);
  assertEquals((await client.getManifest(repo, md)).bytes, manifest);
  assertEquals((await client.headManifest(repo, "v1"))?.digest, md);
  assertEquals(await client.headManifest(repo, "nope"), null);
  assertEquals(await client.listTags(repo), ["v1"]);
  return digest;
}

Deno.test("RegistryClient - open registry over plain HTTP on loopback: blobs, ranges, manifests, mount, chunked upload", async () => {
  await using reg = await TestRegistry.start({ absoluteUrls: true });
  const client = new RegistryClient(reg.host);
  const digest = await roundTrip(client, "team/a");
  // Cross-repository mount: no bytes sent, the blob appears in the other repository.
  assertEquals(await client.mountBlob("team/b", digest, "team/a"), true);
  assert((await client.headBlob("team/b", digest)) !== null);
  // Mounting what the source lacks starts an upload instead; it is cancelled.
  const missing = `sha256:${"0".repeat(64)}`;
  assertEquals(await client.mountBlob("team/b", missing, "team/a"), false);
  // Chunked upload (PATCH pieces, then PUT).
  const big = blob(5 * 65536 + 3, 9);
  const bigDigest = await sha256Digest(big);
  const progress: number[] = [];
  await client.uploadBlob("team/a", bigDigest, big, {
    chunkBytes: 65536 * 2,
    onProgress: (n) => progress.push(n),
  });
  assertEquals(progress, [131072, 262144, big.length, big.length]);
  assertEquals(await client.getBlob("team/a", bigDigest, big.length), big);
  await expectCode(client.getManifest("team/a", "nope"), "not_found");
  await expectCode(client.getBlob("team/a", missing, 1), "not_found");
});

Deno.test("RegistryClient - htpasswd registry: Basic auth, wrong and missing credentials", async () => {
  await using reg = await TestRegistry.start({
    auth: { kind: "htpasswd", users: [{ name: "alice", password: "wonder land" }] },
  });
  const ok = new RegistryClient(reg.host, {
    credentials: { kind: "basic", username: "alice", password: "wonder land" },
  });
  await roundTrip(ok, "x");
  const none = new RegistryClient(reg.host);
  const err = await expectCode(none.getManifest("x", "v1"), "unauthorized");
  assert(err.message.includes(`shuru login ${reg.host}`), err.message);
  const wrong = new RegistryClient(reg.host, {
    credentials: { kind: "basic", username: "alice", password: "nope" },
  });
  await expectCode(wrong.headBlob("x", `sha256:${"1".repeat(64)}`), "unauthorized");
});

Deno.test("RegistryClient - token registry: the Bearer dance, tokens cached per scope", async () => {
  await using reg = await TestRegistry.start({
    auth: {
      kind: "token",
      users: [{ name: "alice", password: "pw" }, {
        name: "reader",
        password: "pw",
        actions: [
          "pull",
        ],
      }],
    },
  });
  const alice = new RegistryClient(reg.host, {
    credentials: { kind: "basic", username: "alice", password: "pw" },
  });
  await roundTrip(alice, "team/env");
  // One token per distinct scope set, not one per request.
  const scopes = reg.tokenRequests.map((r) => r.scopes.join(" "));
  assertEquals(new Set(scopes).size, scopes.length, scopes.join(" | "));
  assert(scopes.includes("repository:team/env:pull"), scopes.join(" | "));
  assert(scopes.includes("repository:team/env:pull,push"), scopes.join(" | "));
  // Without credentials the issuer refuses; with pull-only rights a push is refused.
  const anon = new RegistryClient(reg.host);
  const err = await expectCode(anon.getManifest("team/env", "v1"), "unauthorized");
  assert(err.message.includes("shuru login"), err.message);
  const reader = new RegistryClient(reg.host, {
    credentials: { kind: "basic", username: "reader", password: "pw" },
  });
  assertEquals((await reader.getManifest("team/env", "v1")).mediaType, MEDIA_OCI_MANIFEST);
  const data = blob(100, 3);
  await expectCode(reader.uploadBlob("team/env", await sha256Digest(data), data), "unauthorized");
  const wrong = new RegistryClient(reg.host, {
    credentials: { kind: "basic", username: "alice", password: "bad" },
  });
  await expectCode(wrong.getManifest("team/env", "v1"), "unauthorized");
  // What `shuru login` checks: a token for no scope.
  assertEquals(await alice.transport.verifyCredentials(), "bearer");
  await expectCode(
    new RegistryClient(reg.host, {
      credentials: { kind: "basic", username: "alice", password: "bad" },
    }).transport.verifyCredentials(),
    "unauthorized",
  );
});

Deno.test("RegistryClient - HTTPS first; plain HTTP refused for a registry that is not loopback", async () => {
  await using reg = await TestRegistry.start({ tls: true });
  const caFile = `${reg.dir}/ca.pem`;
  // fetch trusts DENO_CERT only at start-up, so this runs in a child Deno with it set.
  const script = `
    import { RegistryClient, sha256Digest } from "${new URL("../oci/mod.ts", import.meta.url)}";
    const c = new RegistryClient("${reg.host}");
    const data = new TextEncoder().encode("over tls");
    const d = await sha256Digest(data);
    await c.uploadBlob("tls/x", d, data);
    console.log(await c.transport.baseUrl(), await c.headBlob("tls/x", d));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    env: { DENO_CERT: caFile },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  assertEquals(text, `https://${reg.host} 8`);
  // A host that is not loopback gets HTTPS only: with nothing listening, the error says how
  // to allow plain HTTP. (localhost.localdomain-style names are not loopback by rule; the
  // address is never contacted over HTTP.)
  await using plain = await TestRegistry.start();
  const port = plain.host.split(":")[1];
  const client = new RegistryClient(`shuru-test-not-loopback.invalid:${port}`, {
    retry: FAST_RETRY,
  });
  const err = await expectCode(client.ping(), "network");
  assert(err.message.includes("--insecure-registry"), err.message);
});

Deno.test("RegistryClient - injected 429 and 5xx are retried, then reported with their code", async () => {
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  const lines: string[] = [];
  const client = new RegistryClient(front.host, {
    retry: FAST_RETRY,
    onRetry: (l) => lines.push(l),
  });
  const digest = await roundTrip(client, "r");
  const isManifest = (r: { path: string }) => r.path.includes("/manifests/");
  // Two failures then success: the caller never sees them.
  front.rules = [{ match: isManifest, action: { kind: "status", status: 503 }, times: 2 }];
  await client.getManifest("r", "v1");
  assertEquals(lines.length, 2, lines.join("\n"));
  assert(lines[0]!.includes("503"), lines[0]);
  for (
    const [status, code] of [
      [429, "rate_limited"],
      [500, "server_error"],
      [502, "server_error"],
      [
        403,
        "denied",
      ],
      [401, "unauthorized"],
      [404, "not_found"],
    ] as const
  ) {
    front.rules = [{ match: isManifest, action: { kind: "status", status } }];
    front.resetCounters();
    await expectCode(client.getManifest("r", "v1"), code);
    const tries = front.requests.filter((r) => r.includes("/manifests/")).length;
    // 401 without a challenge, 403 and 404 are final: not retried.
    const expected = status === 429 || status >= 500 ? FAST_RETRY.attempts : 1;
    assertEquals(tries, expected, `${status}: ${front.requests.join(", ")}`);
  }
  front.rules = [];
  // Retry-After is honoured (capped by the policy).
  front.rules = [{
    match: isManifest,
    action: { kind: "status", status: 429, headers: { "retry-after": "1" } },
    times: 1,
  }];
  const t0 = performance.now();
  await client.getManifest("r", "v1");
  assert(performance.now() - t0 >= FAST_RETRY.maxRetryAfterMs - 20);
  assert(digest.startsWith("sha256:"));
});

Deno.test("RegistryClient - a registry that lies about sizes or bytes is caught", async () => {
  await using reg = await TestRegistry.start();
  await using front = FaultyFront.start(`http://${reg.host}`);
  const client = new RegistryClient(front.host, { retry: FAST_RETRY });
  const digest = await roundTrip(client, "lie");
  const size = 3 * 65536 + 17;
  const isBlob = (r: { path: string; method: string }) =>
    r.method === "GET" && r.path.includes("/blobs/");
  front.rules = [{ match: isBlob, action: { kind: "size", length: size - 1 } }];
  await expectCode(client.getBlob("lie", digest, size), "size_mismatch");
  front.rules = [{ match: isBlob, action: { kind: "size", length: size + 100 } }];
  await expectCode(client.getBlob("lie", digest, size), "size_mismatch");
  front.rules = [{ match: isBlob, action: { kind: "size", length: 10 } }];
  await expectCode(
    client.getBlobRange("lie", digest, { offset: 0, length: 100, blobSize: size }),
    "size_mismatch",
  );
  front.rules = [{ match: isBlob, action: { kind: "corrupt", offset: 5 } }];
  await expectCode(client.getBlob("lie", digest, size), "digest_mismatch");
  const isManifest = (r: { path: string }) => r.path.includes("/manifests/");
  front.rules = [{ match: isManifest, action: { kind: "corrupt", offset: 3 } }];
  await expectCode(client.getManifest("lie", "v1"), "digest_mismatch");
  // A login page or an error document where a manifest should be.
  front.rules = [{ match: isManifest, action: { kind: "contentType", value: "text/html" } }];
  const mt = await expectCode(client.getManifest("lie", "v1"), "media_type");
  assert(mt.message.includes("text/html"), mt.message);
  front.rules = [{ match: isBlob, action: { kind: "cut", bytes: 1000 } }];
  await expectCode(client.getBlob("lie", digest, size), "network");
  front.rules = [];
  assertEquals((await client.getBlob("lie", digest, size)).length, size);
});
