/**
 * The one place that talks HTTP to a registry: picks the scheme, authenticates, retries.
 *
 * - **Scheme.** HTTPS always comes first. Plain HTTP is tried only for loopback registries
 *   (`localhost`, `127.x`, `::1`) and hosts given with `--insecure-registry`, and only when
 *   HTTPS fails to connect. The choice is made once, by the first request (`GET /v2/`, the
 *   protocol's ping), and kept.
 * - **Auth.** The ping's `WWW-Authenticate` says how: `Basic` sends the user's credentials
 *   with every request; `Bearer realm=...,service=...` means the token dance: ask the realm for
 *   a token for the request's scope (`repository:team/env:pull,push`) with the credentials (or
 *   an identity token's OAuth2 refresh grant), then send `Authorization: Bearer`. Tokens are
 *   cached per scope until shortly before they expire; a 401 on a request drops the cached
 *   token and asks once more (the registry may want another scope), as go-containerregistry's
 *   transport does. A realm must be HTTPS unless its host may use plain HTTP too.
 * - **Retries.** Network errors, 408, 429 and 5xx are retried with backoff (`retry.ts`);
 *   requests that are not idempotent (upload steps) are retried only on a status, since a
 *   broken connection may have delivered part of them; their caller restarts the upload.
 *
 * @module
 */

import { parseChallenges } from "./challenge.ts";
import type { Credentials } from "./docker_config.ts";
import { codeForStatus, RegistryError } from "./errors.ts";
import { hostnameOf, isLoopbackRegistry, registryHost } from "./reference.ts";
import { type AttemptOutcome, DEFAULT_RETRY, retryDelay, type RetryPolicy } from "./retry.ts";

/** Options of {@linkcode RegistryTransport}. */
export interface TransportOptions {
  /** The credentials, or a function that looks them up when the registry first asks. */
  credentials?: Credentials | null | (() => Promise<Credentials | null>);
  /** Hosts (`host` or `host:port`) that may be reached over plain HTTP besides loopback. */
  insecureRegistries?: readonly string[];
  /** Retry settings (default {@linkcode DEFAULT_RETRY}). */
  retry?: RetryPolicy;
  /** Milliseconds to wait for response headers in one attempt. @default 30000 */
  timeoutMs?: number;
  /** Called before each retry with a one-line description. */
  onRetry?: (line: string) => void;
  /** Sleeps (tests pass a fake). @default setTimeout */
  sleep?: (ms: number) => Promise<void>;
  /** Random numbers in [0, 1) for jitter. @default Math.random */
  random?: () => number;
  /** The clock for token expiry, in milliseconds. @default Date.now */
  now?: () => number;
}

/** One request. */
export interface TransportRequest {
  /** HTTP method. */
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** A path (`/v2/...`) on the registry, or an absolute URL (an upload `Location`). */
  path: string;
  /** Token scopes the request needs (`repository:NAME:pull`), none for the ping. */
  scopes: readonly string[];
  /** What the request is for, for messages: "Cannot <action>: ...". */
  action: string;
  /** Request headers. */
  headers?: Record<string, string>;
  /** Request body (bytes, so a retry can send it again). */
  body?: Uint8Array;
  /** Statuses handed back to the caller instead of thrown (besides 2xx), e.g. 404 on HEAD. */
  allow?: readonly number[];
  /** `false` for upload steps: retried only on a status, never after a network error. */
  idempotent?: boolean;
}

interface AuthState {
  scheme: "none" | "basic" | "bearer";
  realm?: string;
  service?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** HTTP to one registry with auth and retries; see the module doc. */
export class RegistryTransport {
  /** The registry as written in references. */
  readonly registry: string;
  #host: string;
  #options: TransportOptions;
  #retry: RetryPolicy;
  #base: Promise<string> | null = null;
  #auth: AuthState = { scheme: "none" };
  #tokens = new Map<string, CachedToken>();
  #credentials: Promise<Credentials | null> | null = null;

  /**
   * @param registry The registry (`localhost:5000`, `ghcr.io`, `docker.io`).
   * @param options Credentials, insecure hosts, retry settings.
   */
  constructor(registry: string, options: TransportOptions = {}) {
    this.registry = registry;
    this.#host = registryHost(registry);
    this.#options = options;
    this.#retry = options.retry ?? DEFAULT_RETRY;
  }

  /** `true` when plain HTTP may be used for `host` (loopback or listed as insecure). */
  #httpAllowed(host: string): boolean {
    if (isLoopbackRegistry(host)) return true;
    const list = this.#options.insecureRegistries ?? [];
    return list.includes(host) || list.includes(hostnameOf(host));
  }

  /** The base URL (`https://host`), decided by the first successful ping. */
  baseUrl(): Promise<string> {
    this.#base ??= this.#ping().catch((err) => {
      this.#base = null;
      throw err;
    });
    return this.#base;
  }

  async #ping(): Promise<string> {
    const schemes = this.#httpAllowed(this.#host) ? ["https", "http"] : ["https"];
    let attempt = 0;
    while (true) {
      attempt++;
      let lastError: unknown;
      for (const scheme of schemes) {
        const base = `${scheme}://${this.#host}`;
        let res: Response;
        try {
          res = await this.#fetch(`${base}/v2/`, { method: "GET" });
        } catch (err) {
          lastError = err;
          continue;
        }
        await res.body?.cancel();
        if (res.status === 401) {
          this.#learnChallenge(res.headers.get("www-authenticate"));
          return base;
        }
        if (res.ok) return base;
        const delay = retryDelay(
          this.#retry,
          attempt,
          { kind: "status", status: res.status, retryAfter: res.headers.get("retry-after") },
          this.#random(),
        );
        if (delay === null) {
          throw new RegistryError(
            codeForStatus(res.status),
            `Cannot reach registry ${this.registry}: GET /v2/ answered ${res.status} ` +
              `${res.statusText} (is it an OCI registry?)`,
            { status: res.status },
          );
        }
        await this.#wait(delay, `registry ${this.registry} answered ${res.status}`, attempt);
        lastError = undefined;
        break;
      }
      if (lastError === undefined) continue;
      const delay = retryDelay(this.#retry, attempt, { kind: "network" }, this.#random());
      if (delay === null) {
        const plain = schemes.length === 1
          ? ` (plain HTTP is used only for loopback registries or with ` +
            `--insecure-registry ${this.#host})`
          : "";
        throw new RegistryError(
          "network",
          `Cannot reach registry ${this.registry}: ${describe(lastError)}${plain}`,
          { cause: lastError },
        );
      }
      await this.#wait(delay, `cannot reach ${this.registry} (${describe(lastError)})`, attempt);
    }
  }

  #learnChallenge(header: string | null): void {
    const challenges = parseChallenges(header ?? "");
    const bearer = challenges.find((c) => c.scheme === "bearer");
    if (bearer && bearer.params.realm) {
      this.#auth = {
        scheme: "bearer",
        realm: bearer.params.realm,
        ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}),
      };
      return;
    }
    if (challenges.some((c) => c.scheme === "basic")) this.#auth = { scheme: "basic" };
  }

  #random(): number {
    return (this.#options.random ?? Math.random)();
  }

  async #wait(ms: number, why: string, attempt: number): Promise<void> {
    this.#options.onRetry?.(
      `shuru: ${why}; retrying in ${(ms / 1000).toFixed(1)} s ` +
        `(attempt ${attempt + 1} of ${this.#retry.attempts})`,
    );
    await (this.#options.sleep ?? ((t) => new Promise((r) => setTimeout(r, t))))(ms);
  }

  /** fetch with a deadline on the response headers (bodies are read by the caller). */
  async #fetch(url: string, init: RequestInit): Promise<Response> {
    const ctl = new AbortController();
    const timer = setTimeout(
      () => ctl.abort(new Error("no answer in time")),
      this.#options.timeoutMs ?? 30_000,
    );
    try {
      return await fetch(url, { ...init, signal: ctl.signal, redirect: "follow" });
    } finally {
      clearTimeout(timer);
    }
  }

  #getCredentials(): Promise<Credentials | null> {
    const c = this.#options.credentials;
    this.#credentials ??= typeof c === "function" ? c() : Promise.resolve(c ?? null);
    return this.#credentials;
  }

  async #authorization(scopes: readonly string[], refresh: boolean): Promise<string | null> {
    if (this.#auth.scheme === "basic") {
      const creds = await this.#getCredentials();
      if (!creds) return null;
      const secret = creds.kind === "basic" ? creds.password : creds.token;
      return `Basic ${new TextEncoder().encode(`${creds.username}:${secret}`).toBase64()}`;
    }
    if (this.#auth.scheme !== "bearer") return null;
    const key = scopes.join(" ");
    const now = (this.#options.now ?? Date.now)();
    const cached = this.#tokens.get(key);
    if (!refresh && cached && cached.expiresAt > now) return `Bearer ${cached.token}`;
    const token = await this.#fetchToken(scopes);
    this.#tokens.set(key, token);
    return `Bearer ${token.token}`;
  }

  async #fetchToken(scopes: readonly string[]): Promise<CachedToken> {
    const realm = this.#auth.realm!;
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new RegistryError(
        "bad_response",
        `Cannot log in to ${this.registry}: its token realm "${realm}" is not a URL`,
        { cause: err },
      );
    }
    if (url.protocol !== "https:" && !(url.protocol === "http:" && this.#httpAllowed(url.host))) {
      throw new RegistryError(
        "insecure",
        `Cannot log in to ${this.registry}: its token service ${realm} is not HTTPS (plain ` +
          `HTTP is used only on loopback or with --insecure-registry ${url.host})`,
      );
    }
    const creds = await this.#getCredentials();
    const service = this.#auth.service;
    let init: RequestInit;
    if (creds?.kind === "identity_token") {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: creds.token,
        client_id: "shuru",
      });
      if (service !== undefined) form.set("service", service);
      if (scopes.length > 0) form.set("scope", scopes.join(" "));
      init = {
        method: "POST",
        body: form.toString(),
        headers: { "content-type": "application/x-www-form-urlencoded" },
      };
    } else {
      if (service !== undefined) url.searchParams.set("service", service);
      for (const s of scopes) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (creds) {
        headers.authorization = `Basic ${
          new TextEncoder().encode(`${creds.username}:${creds.password}`).toBase64()
        }`;
      }
      init = { method: "GET", headers };
    }
    const what = `get a token from ${url.origin}${url.pathname} for ${this.registry}`;
    const res = await this.#withRetries(`Cannot ${what}`, true, () => this.#fetch(url.href, init));
    const text = await res.text();
    if (res.status === 401 || res.status === 403) {
      throw new RegistryError(
        res.status === 401 ? "unauthorized" : "denied",
        `Cannot ${what}: the token service answered ${res.status} ` +
          (creds
            ? `(are the credentials for ${creds.username} right? \`shuru login ${this.registry}\`)`
            : `(no credentials: \`shuru login ${this.registry}\`)`),
        { status: res.status },
      );
    }
    if (!res.ok) {
      throw new RegistryError(
        codeForStatus(res.status),
        `Cannot ${what}: the token service answered ${res.status}`,
        { status: res.status },
      );
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new RegistryError("bad_response", `Cannot ${what}: the answer is not JSON`, {
        cause: err,
      });
    }
    const token = typeof body.token === "string"
      ? body.token
      : typeof body.access_token === "string"
      ? body.access_token
      : "";
    if (!token) throw new RegistryError("bad_response", `Cannot ${what}: the answer has no token`);
    // The spec's default lifetime is 60 s; renew 10 s early so a token never expires in flight.
    const seconds = typeof body.expires_in === "number" && body.expires_in > 0
      ? body.expires_in
      : 60;
    const now = (this.#options.now ?? Date.now)();
    return { token, expiresAt: now + Math.max(1, seconds - 10) * 1000 };
  }

  /** Runs `attempt` with retries on network errors (when idempotent) and retryable statuses. */
  async #withRetries(
    what: string,
    idempotent: boolean,
    attempt: () => Promise<Response>,
  ): Promise<Response> {
    for (let n = 1;; n++) {
      let res: Response;
      let outcome: AttemptOutcome;
      try {
        res = await attempt();
        outcome = {
          kind: "status",
          status: res.status,
          retryAfter: res.headers.get("retry-after"),
        };
      } catch (err) {
        if (err instanceof RegistryError) throw err;
        const delay = idempotent
          ? retryDelay(this.#retry, n, { kind: "network" }, this.#random())
          : null;
        if (delay === null) {
          throw new RegistryError("network", `${what}: ${describe(err)}`, { cause: err });
        }
        await this.#wait(delay, `${what.replace(/^Cannot /, "cannot ")}: ${describe(err)}`, n);
        continue;
      }
      if (res.ok || outcome.kind !== "status") return res;
      const delay = retryDelay(this.#retry, n, outcome, this.#random());
      if (delay === null) return res;
      await res.body?.cancel();
      await this.#wait(delay, `the registry answered ${res.status} ${res.statusText}`, n);
    }
  }

  /**
   * Checks the credentials (`shuru login`): a token for no scope from a Bearer registry's
   * realm, or an authenticated `GET /v2/` for a Basic one. Returns how the registry
   * authenticates (`none`: it is open and needs no credentials).
   */
  async verifyCredentials(): Promise<"none" | "basic" | "bearer"> {
    await this.baseUrl();
    if (this.#auth.scheme === "bearer") {
      await this.#fetchToken([]);
    } else if (this.#auth.scheme === "basic") {
      const res = await this.request({
        method: "GET",
        path: "/v2/",
        scopes: [],
        action: `log in to ${this.registry}`,
      });
      await res.body?.cancel();
    }
    return this.#auth.scheme;
  }

  /**
   * Sends `req` and returns the response when it is 2xx or listed in `allow`; throws a
   * {@linkcode RegistryError} with the registry's own error text otherwise.
   */
  async request(req: TransportRequest): Promise<Response> {
    const base = await this.baseUrl();
    const url = req.path.startsWith("/") ? base + req.path : new URL(req.path, base).href;
    let refreshed = false;
    while (true) {
      const authorization = await this.#authorization(req.scopes, refreshed);
      const headers: Record<string, string> = { ...(req.headers ?? {}) };
      if (authorization) headers.authorization = authorization;
      const res = await this.#withRetries(
        `Cannot ${req.action}`,
        req.idempotent ?? true,
        () =>
          this.#fetch(url, {
            method: req.method,
            headers,
            ...(req.body !== undefined ? { body: req.body as Uint8Array<ArrayBuffer> } : {}),
          }),
      );
      if (res.status === 401 && !refreshed) {
        // A token for another scope, an expired one, or the first sign that auth is needed.
        const before = this.#auth.scheme;
        this.#learnChallenge(res.headers.get("www-authenticate"));
        refreshed = true;
        if (this.#auth.scheme !== "none" && (before === "none" || before === "bearer")) {
          await res.body?.cancel();
          continue;
        }
      }
      if (res.ok || req.allow?.includes(res.status)) return res;
      throw await errorFromResponse(res, `Cannot ${req.action}`, this.registry, this.#auth.scheme);
    }
  }
}

/** A one-line description of a fetch failure (a TLS or connection error). */
function describe(err: unknown): string {
  let msg = err instanceof Error ? err.message : String(err);
  // fetch says "fetch failed" and keeps the reason (refused, reset, TLS) in its cause.
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error && cause.message) msg = `${msg} (${describe(cause)})`;
  return msg.split("\n")[0]!.replace(/^error sending request for url \([^)]*\): /, "");
}

/** Builds the error for a refused request, with the registry's `errors[0]` text when given. */
export async function errorFromResponse(
  res: Response,
  what: string,
  registry: string,
  scheme: string,
): Promise<RegistryError> {
  let detail = "";
  try {
    const text = res.body ? (await res.text()).slice(0, 4096) : "";
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const e = parsed.errors?.[0];
    if (e) detail = [e.code, e.message].filter(Boolean).join(": ");
  } catch {
    // not JSON: the status says enough
  }
  const status = res.status;
  const code = codeForStatus(status);
  const said = `the registry answered ${status} ${res.statusText}${detail ? ` (${detail})` : ""}`;
  let hint = "";
  if (status === 401) {
    hint = scheme === "none"
      ? ""
      : `; log in with \`shuru login ${registry}\` (or docker login) and try again`;
  } else if (status === 403) {
    hint = "; the credentials are valid but lack access to this repository";
  } else if (status === 429) hint = "; too many requests, still refused after retries";
  else if (status >= 500) hint = "; the registry is failing, still after retries";
  return new RegistryError(code, `${what}: ${said}${hint}`, { status });
}
