/**
 * Registry credentials the way docker keeps them, so `docker login` and `shuru login` share one
 * store: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, with
 *
 * - `auths`: `{"host": {"auth": base64("user:password")}}` (or `identitytoken`);
 * - `credHelpers`: `{"host": "NAME"}` and `credsStore`: `"NAME"`, meaning: run
 *   `docker-credential-NAME get|store|erase` with the server on stdin (the helper protocol of
 *   docker-credential-helpers); a `<token>` user name means the secret is an identity token.
 *
 * Lookups try the helper for the host first, then `credsStore`, then `auths`. Keys in `auths`
 * may be written with a scheme and path (`https://index.docker.io/v1/`); they are matched by host.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { RegistryError } from "./errors.ts";
import { credentialKey } from "./reference.ts";

/** Credentials for one registry. */
export type Credentials =
  | { kind: "basic"; username: string; password: string }
  | { kind: "identity_token"; username: string; token: string };

/** Options shared by the functions here. */
export interface DockerConfigOptions {
  /** The config file (default: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`). */
  configPath?: string;
  /** Environment lookups (default `Deno.env.get`); tests pass their own. */
  env?: (name: string) => string | undefined;
}

/** Where docker's config lives. */
export function dockerConfigPath(options: DockerConfigOptions = {}): string {
  if (options.configPath) return options.configPath;
  const env = options.env ?? ((n) => Deno.env.get(n));
  const dir = env("DOCKER_CONFIG");
  if (dir) return join(dir, "config.json");
  const home = env("HOME");
  if (!home) {
    throw new RegistryError(
      "bad_response",
      "Cannot find docker's config: set HOME or DOCKER_CONFIG",
    );
  }
  return join(home, ".docker", "config.json");
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

interface ConfigFile {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [key: string]: unknown;
}

async function readConfig(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error("not a JSON object");
    }
    return parsed as ConfigFile;
  } catch (err) {
    throw new RegistryError(
      "bad_response",
      `Cannot read docker's config ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** The host of an `auths` key (`https://index.docker.io/v1/` → `index.docker.io`). */
function keyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
}

function matchesRegistry(key: string, registry: string): boolean {
  const want = keyHost(credentialKey(registry));
  return key === registry || keyHost(key) === want || keyHost(key) === registry;
}

function decodeEntry(entry: AuthEntry): Credentials | null {
  let username = entry.username ?? "";
  let password = entry.password ?? "";
  if (entry.auth) {
    const text = new TextDecoder().decode(Uint8Array.fromBase64(entry.auth));
    const colon = text.indexOf(":");
    if (colon < 0) return null;
    username = text.slice(0, colon);
    password = text.slice(colon + 1);
  }
  if (entry.identitytoken) {
    return { kind: "identity_token", username, token: entry.identitytoken };
  }
  if (!username && !password) return null;
  return { kind: "basic", username, password };
}

/** Runs `docker-credential-NAME ACTION` with `input` on stdin; returns stdout, or null. */
async function runHelper(
  name: string,
  action: "get" | "store" | "erase",
  input: string,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const program = `docker-credential-${name}`;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: [action],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new RegistryError(
      "unauthorized",
      `Cannot run credential helper ${program} (named in docker's config): ` +
        `${(err as Error).message}`,
      { cause: err },
    );
  }
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function fromHelper(name: string, registry: string): Promise<Credentials | null> {
  const server = credentialKey(registry);
  const r = await runHelper(name, "get", server);
  if (!r.ok) {
    // The protocol's "not found" answer; anything else is a helper failure worth reporting.
    if (/credentials not found/i.test(r.stdout + r.stderr)) return null;
    throw new RegistryError(
      "unauthorized",
      `Cannot get credentials for ${registry} from docker-credential-${name}: ` +
        (r.stderr.trim() || r.stdout.trim() || "it failed"),
    );
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(r.stdout);
  } catch (err) {
    throw new RegistryError(
      "unauthorized",
      `Cannot get credentials for ${registry} from docker-credential-${name}: ` +
        "its answer is not JSON",
      { cause: err },
    );
  }
  const username = typeof parsed.Username === "string" ? parsed.Username : "";
  const secret = typeof parsed.Secret === "string" ? parsed.Secret : "";
  if (!secret) return null;
  if (username === "<token>") return { kind: "identity_token", username, token: secret };
  return { kind: "basic", username, password: secret };
}

/**
 * The credentials docker's config holds for `registry` (as written in references: `docker.io`,
 * `localhost:5000`), or `null` for anonymous access.
 */
export async function lookupCredentials(
  registry: string,
  options: DockerConfigOptions = {},
): Promise<Credentials | null> {
  const config = await readConfig(dockerConfigPath(options));
  const helpers = config.credHelpers ?? {};
  for (const [key, name] of Object.entries(helpers)) {
    if (typeof name === "string" && matchesRegistry(key, registry)) {
      return await fromHelper(name, registry);
    }
  }
  if (typeof config.credsStore === "string" && config.credsStore) {
    const found = await fromHelper(config.credsStore, registry);
    if (found) return found;
  }
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (matchesRegistry(key, registry) && entry && typeof entry === "object") {
      const creds = decodeEntry(entry);
      if (creds) return creds;
    }
  }
  return null;
}

/** Where {@linkcode storeCredentials} put the credentials. */
export type StoredIn = { kind: "helper"; helper: string } | { kind: "file"; path: string };

/**
 * Stores credentials for `registry` the way `docker login` does: with the registry's credential
 * helper (`credHelpers`, else `credsStore`) when one is configured, else base64 in `auths` of
 * the config file (written atomically, mode 0600, other keys kept).
 */
export async function storeCredentials(
  registry: string,
  creds: { username: string; password: string },
  options: DockerConfigOptions = {},
): Promise<StoredIn> {
  const path = dockerConfigPath(options);
  const config = await readConfig(path);
  const key = credentialKey(registry);
  let helper: string | undefined;
  for (const [k, name] of Object.entries(config.credHelpers ?? {})) {
    if (typeof name === "string" && matchesRegistry(k, registry)) helper = name;
  }
  helper ??= typeof config.credsStore === "string" && config.credsStore
    ? config.credsStore
    : undefined;
  if (helper) {
    const r = await runHelper(
      helper,
      "store",
      JSON.stringify({ ServerURL: key, Username: creds.username, Secret: creds.password }),
    );
    if (!r.ok) {
      throw new RegistryError(
        "unauthorized",
        `Cannot store credentials for ${registry} with docker-credential-${helper}: ` +
          (r.stderr.trim() || r.stdout.trim() || "it failed"),
      );
    }
    return { kind: "helper", helper };
  }
  const auths = { ...(config.auths ?? {}) };
  for (const k of Object.keys(auths)) if (matchesRegistry(k, registry)) delete auths[k];
  auths[key] = {
    auth: new TextEncoder().encode(`${creds.username}:${creds.password}`).toBase64(),
  };
  const next: ConfigFile = { ...config, auths };
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(next, null, "\t") + "\n", { mode: 0o600 });
    await Deno.rename(tmp, path);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return { kind: "file", path };
}
