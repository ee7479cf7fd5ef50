/**
 * Real registries for tests: Debian's `docker-registry` (CNCF distribution) started on
 * 127.0.0.1 with a config in a temp folder and filesystem storage, in one of four shapes:
 * open, htpasswd (Basic), token (Bearer, with a token issuer this module runs: a Deno HTTP
 * server signing ES256 JWTs with a certificate the registry trusts through `rootcertbundle`),
 * or TLS (a certificate from a test CA, trusted by shuru through `DENO_CERT`). Plus a
 * {@linkcode FaultyFront}: an HTTP server on loopback in front of a registry that counts bytes
 * and can inject statuses, lie about sizes or break off, for the bad-input tests.
 *
 * Every wait has a deadline; everything is stopped by `await using`.
 *
 * @module
 */

import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { CertificateAuthority } from "../proxy/secret/ca.ts";

/** Fails (never skips) when `tool` is missing, saying how to install it. */
export async function requireRegistryTools(): Promise<void> {
  for (
    const [tool, pkg] of [["docker-registry", "docker-registry"], ["skopeo", "skopeo"], [
      "htpasswd",
      "apache2-utils",
    ]]
  ) {
    const out = await new Deno.Command("sh", {
      args: ["-c", `command -v ${tool}`],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) {
      throw new Error(`${tool} is required for this test: apt-get install ${pkg}`);
    }
  }
}

/** A free TCP port on 127.0.0.1 (released before returning; the caller binds it next). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Polls `fn` until it returns true, failing after `ms` with `what`. */
export async function waitFor(
  what: string,
  ms: number,
  fn: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** A user of the auth-protected registries: name, password and what the token grants. */
export interface TestUser {
  name: string;
  password: string;
  /** Token issuer only: the actions granted on every repository (default pull and push). */
  actions?: string[];
}

/** How the registry authenticates. */
export type RegistryAuth =
  | { kind: "none" }
  | { kind: "htpasswd"; users: TestUser[] }
  | { kind: "token"; users: TestUser[]; anonymousPull?: boolean };

/** Options of {@linkcode TestRegistry.start}. */
export interface TestRegistryOptions {
  auth?: RegistryAuth;
  /** Serve HTTPS with a certificate for 127.0.0.1 from a test CA (`caPem`). */
  tls?: boolean;
  /**
   * Answer with absolute upload `Location`s, as distribution does by default (relative ones
   * otherwise, so clients behind a {@linkcode FaultyFront} keep talking to the front).
   */
  absoluteUrls?: boolean;
}

/** A `docker-registry` process on 127.0.0.1. */
export class TestRegistry implements AsyncDisposable {
  /** `127.0.0.1:PORT`, as written in references. */
  readonly host: string;
  /** The temp folder (config, storage, logs). */
  readonly dir: string;
  /** PEM of the CA that signed the TLS certificate (with `tls`). */
  readonly caPem: string | undefined;
  #child: Deno.ChildProcess | null;
  #issuer: Deno.HttpServer | null;
  /** Tokens the issuer handed out, with the scopes asked and granted (token auth only). */
  readonly tokenRequests: { user: string | null; scopes: string[] }[];

  private constructor(
    host: string,
    dir: string,
    child: Deno.ChildProcess,
    issuer: Deno.HttpServer | null,
    tokenRequests: { user: string | null; scopes: string[] }[],
    caPem: string | undefined,
  ) {
    this.host = host;
    this.dir = dir;
    this.#child = child;
    this.#issuer = issuer;
    this.tokenRequests = tokenRequests;
    this.caPem = caPem;
  }

  /** Starts a registry (and its token issuer) and waits until `/v2/` answers. */
  static async start(options: TestRegistryOptions = {}): Promise<TestRegistry> {
    await requireRegistryTools();
    const dir = await Deno.makeTempDir({ prefix: "shuru-registry-" });
    const port = freePort();
    const auth = options.auth ?? { kind: "none" };
    const lines = [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(dir, "data")}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  relativeurls: ${options.absoluteUrls ? "false" : "true"}`,
    ];
    let caPem: string | undefined;
    if (options.tls) {
      const ca = await CertificateAuthority.create({ commonName: "shuru test registry CA" });
      const leaf = await ca.leaf("127.0.0.1");
      await Deno.writeTextFile(join(dir, "tls.crt"), leaf.certPem);
      await Deno.writeTextFile(join(dir, "tls.key"), leaf.keyPem);
      await Deno.writeTextFile(join(dir, "ca.pem"), ca.certificatePem);
      caPem = ca.certificatePem;
      lines.push(
        "  tls:",
        `    certificate: ${join(dir, "tls.crt")}`,
        `    key: ${join(dir, "tls.key")}`,
      );
    }
    let issuer: Deno.HttpServer | null = null;
    const tokenRequests: { user: string | null; scopes: string[] }[] = [];
    if (auth.kind === "htpasswd") {
      const entries: string[] = [];
      for (const u of auth.users) {
        const out = await new Deno.Command("htpasswd", {
          args: ["-Bbn", u.name, u.password],
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (!out.success) {
          throw new Error(`htpasswd failed: ${new TextDecoder().decode(out.stderr)}`);
        }
        entries.push(new TextDecoder().decode(out.stdout).trim());
      }
      await Deno.writeTextFile(join(dir, "htpasswd"), entries.join("\n") + "\n");
      lines.push(
        "auth:",
        "  htpasswd:",
        "    realm: shuru-test",
        `    path: ${join(dir, "htpasswd")}`,
      );
    } else if (auth.kind === "token") {
      const started = await startTokenIssuer(dir, auth, tokenRequests);
      issuer = started.server;
      lines.push(
        "auth:",
        "  token:",
        `    realm: http://127.0.0.1:${started.port}/token`,
        "    service: shuru-test-registry",
        "    issuer: shuru-test-issuer",
        `    rootcertbundle: ${join(dir, "issuer.pem")}`,
      );
    }
    await Deno.writeTextFile(join(dir, "config.yml"), lines.join("\n") + "\n");
    const logPath = join(dir, "registry.log");
    const child = new Deno.Command("docker-registry", {
      args: ["serve", join(dir, "config.yml")],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Keep the registry's output for failure messages without letting its pipes fill up.
    for (const stream of [child.stdout, child.stderr]) {
      const file = await Deno.open(logPath, { append: true, create: true });
      void stream.pipeTo(file.writable).catch(() => {});
    }
    const reg = new TestRegistry(`127.0.0.1:${port}`, dir, child, issuer, tokenRequests, caPem);
    const scheme = options.tls ? "https" : "http";
    const client = options.tls ? Deno.createHttpClient({ caCerts: [caPem!] }) : undefined;
    try {
      await waitFor(`docker-registry on port ${port}`, 20_000, async () => {
        const res = await fetch(`${scheme}://127.0.0.1:${port}/v2/`, client ? { client } : {});
        await res.body?.cancel();
        return res.status === 200 || res.status === 401;
      });
    } catch (err) {
      const log = await Deno.readTextFile(logPath).catch(() => "");
      await reg[Symbol.asyncDispose]();
      throw new Error(`${(err as Error).message}\nregistry log:\n${log}`);
    } finally {
      client?.close();
    }
    return reg;
  }

  /** `HOST/REPO:TAG`. */
  ref(repoAndTag: string): string {
    return `${this.host}/${repoAndTag}`;
  }

  /** Stops the registry process (the issuer keeps running); idempotent. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = null;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  }

  /** The registry's log (for failure messages). */
  log(): Promise<string> {
    return Deno.readTextFile(join(this.dir, "registry.log")).catch(() => "");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    await this.#issuer?.shutdown();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

function b64url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/**
 * A token issuer as distribution's token auth expects: `GET /token?service=&scope=` with Basic
 * credentials answers `{"token": JWT}`, the JWT signed ES256 with a certificate (sent in `x5c`)
 * issued by the CA in `issuer.pem`, the registry's `rootcertbundle`.
 */
async function startTokenIssuer(
  dir: string,
  auth: { users: TestUser[]; anonymousPull?: boolean },
  log: { user: string | null; scopes: string[] }[],
): Promise<{ server: Deno.HttpServer; port: number }> {
  const ca = await CertificateAuthority.create({ commonName: "shuru test token CA" });
  const leaf = await ca.leaf("shuru-test-issuer");
  await Deno.writeTextFile(join(dir, "issuer.pem"), ca.certificatePem);
  const leafCert = new x509.X509Certificate(
    leaf.certPem.split("-----END CERTIFICATE-----")[0]! +
      "-----END CERTIFICATE-----",
  );
  const der = new Uint8Array(leafCert.rawData);
  const pkcs8 = Uint8Array.fromBase64(
    leaf.keyPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""),
  );
  const key = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8,
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const enc = new TextEncoder();
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname !== "/token") return new Response("not found", { status: 404 });
    let user: TestUser | null = null;
    const authz = req.headers.get("authorization");
    if (authz?.startsWith("Basic ")) {
      const [name, password] = new TextDecoder().decode(Uint8Array.fromBase64(authz.slice(6)))
        .split(/:(.*)/s) as [string, string];
      user = auth.users.find((u) => u.name === name && u.password === password) ?? null;
      if (!user) return Response.json({ details: "wrong credentials" }, { status: 401 });
    } else if (!auth.anonymousPull) {
      return Response.json({ details: "credentials required" }, { status: 401 });
    }
    const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter(Boolean);
    log.push({ user: user?.name ?? null, scopes });
    const allowed = user ? (user.actions ?? ["pull", "push"]) : ["pull"];
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(":");
      const actions = rest.pop()!.split(",");
      return {
        type: type!,
        name: rest.join(":"),
        actions: actions.filter((a) => allowed.includes(a)),
      };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "ES256", x5c: [der.toBase64()] };
    const claims = {
      iss: "shuru-test-issuer",
      sub: user?.name ?? "",
      aud: url.searchParams.get("service") ?? "",
      exp: now + 300,
      nbf: now - 60,
      iat: now,
      jti: crypto.randomUUID(),
      access,
    };
    const input = `${b64url(enc.encode(JSON.stringify(header)))}.${
      b64url(enc.encode(JSON.stringify(claims)))
    }`;
    const sig = new Uint8Array(
      await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, enc.encode(input)),
    );
    const token = `${input}.${b64url(sig)}`;
    return Response.json({ token, access_token: token, expires_in: 300 });
  };
  const port = freePort();
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handler);
  return { server, port };
}

/** What a {@linkcode FaultyFront} rule may do with a request. */
export type FrontAction =
  /** Answer with this status (and an OCI error body) instead of forwarding. */
  | { kind: "status"; status: number; headers?: Record<string, string> }
  /** Forward, then replace the response's `Content-Length` and cut or pad the body. */
  | { kind: "size"; length: number }
  /** Forward, then flip one byte of the body at `offset`. */
  | { kind: "corrupt"; offset: number }
  /** Forward, then stop after `bytes` of the body (the connection breaks). */
  | { kind: "cut"; bytes: number }
  /** Forward with this `Content-Type` instead of the registry's. */
  | { kind: "contentType"; value: string };

/** A rule: when `match(request)` holds, do `action` (for `times` requests, default all). */
export interface FrontRule {
  match: (req: { method: string; path: string; headers: Headers }) => boolean;
  action: FrontAction;
  times?: number;
}

/**
 * An HTTP server on 127.0.0.1 forwarding to a registry, counting the bytes of every response
 * body it forwards and applying fault rules. Clients address it as `127.0.0.1:PORT`.
 */
export class FaultyFront implements AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** Fault rules, checked in order; tests push and clear them. */
  rules: FrontRule[] = [];
  /** Response body bytes forwarded for blob GETs. */
  blobBytes = 0;
  /** Requests seen, as `METHOD path`. */
  readonly requests: string[] = [];
  /** Milliseconds each request waits before it is forwarded (a network's round trip). */
  delayMs = 0;
  #server: Deno.HttpServer;
  #upstream: string;

  private constructor(host: string, server: Deno.HttpServer, upstream: string) {
    this.host = host;
    this.#server = server;
    this.#upstream = upstream;
  }

  /** Starts a front forwarding to `upstream` (`http://127.0.0.1:PORT`). */
  static start(upstream: string): FaultyFront {
    const port = freePort();
    const holder: { front?: FaultyFront } = {};
    const server = Deno.serve(
      {
        hostname: "127.0.0.1",
        port,
        onListen: () => {},
        onError: () => new Response(null, { status: 502 }),
      },
      (req) => holder.front!.#handle(req),
    );
    const front = new FaultyFront(`127.0.0.1:${port}`, server, upstream);
    holder.front = front;
    return front;
  }

  /** Resets counters. */
  resetCounters(): void {
    this.blobBytes = 0;
    this.requests.length = 0;
  }

  async #handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname + url.search;
    this.requests.push(`${req.method} ${url.pathname}`);
    const rule = this.rules.find((r) =>
      (r.times === undefined || r.times > 0) &&
      r.match({ method: req.method, path, headers: req.headers })
    );
    if (rule && rule.times !== undefined) rule.times--;
    const action = rule?.action;
    if (action?.kind === "status") {
      await req.body?.cancel();
      return Response.json(
        { errors: [{ code: "INJECTED", message: `injected ${action.status}` }] },
        { status: action.status, headers: action.headers ?? {} },
      );
    }
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const headers = new Headers(req.headers);
    headers.delete("host");
    const body = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
    const up = await fetch(this.#upstream + path, {
      method: req.method,
      headers,
      ...(body !== undefined && req.method !== "GET" && req.method !== "HEAD" ? { body } : {}),
      redirect: "manual",
    });
    const outHeaders = new Headers(up.headers);
    if (action?.kind === "contentType") outHeaders.set("content-type", action.value);
    const isBlobGet = req.method === "GET" && url.pathname.includes("/blobs/");
    if (req.method === "HEAD" || !up.body) {
      await up.body?.cancel();
      if (action?.kind === "size") outHeaders.set("content-length", String(action.length));
      return new Response(null, { status: up.status, headers: outHeaders });
    }
    let data = new Uint8Array(await up.arrayBuffer());
    if (action?.kind === "size") {
      const resized = new Uint8Array(action.length);
      resized.set(data.subarray(0, Math.min(action.length, data.length)));
      data = resized;
      outHeaders.set("content-length", String(action.length));
    } else if (action?.kind === "corrupt" && data.length > action.offset) {
      data = data.slice();
      data[action.offset]! ^= 0xff;
    }
    if (isBlobGet) this.blobBytes += data.length;
    if (action?.kind === "cut") {
      const cut = data.subarray(0, action.bytes);
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(cut);
          c.error(new Error("cut off by the test"));
        },
      });
      return new Response(stream, { status: up.status, headers: outHeaders });
    }
    return new Response(data, { status: up.status, headers: outHeaders });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

/** Runs `skopeo ARGS`; returns its exit code and output. */
export async function skopeo(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("skopeo", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
