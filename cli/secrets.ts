/**
 * `--secret` and the config's `secrets`: where each secret's value comes from, which hosts
 * may receive it and where in a request (`inject`, `allow_http`). Values come from the command
 * line (`NAME=VALUE@HOSTS`), the host's environment (`NAME@HOSTS`, config `from_env`) or a host
 * command's stdout (config `command`). No error message here ever contains a value.
 *
 * @module
 */

import { parseHostPattern } from "../proxy/mod.ts";
import { INJECT_PLACES, type InjectPlace } from "../proxy/secret/mod.ts";
import type { SecretSetting } from "../runner/mod.ts";
import { UserError } from "./errors.ts";

/** Shortest value accepted: a shorter one would be replaced inside unrelated response text. */
export const MIN_SECRET_LENGTH = 8;
/** How long a config `command` may take. */
const COMMAND_TIMEOUT_MS = 30_000;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The config keys of one secret. */
const CONFIG_KEYS = ["value", "from_env", "command", "hosts", "inject", "allow_http"];

/** Where {@linkcode resolveSecrets} gets outside values (the real ones by default). */
export interface SecretSources {
  /** Reads a host environment variable (default `Deno.env.get`). */
  env?: (name: string) => string | undefined;
  /** Directory a config `command` runs in (default: the current one). */
  cwd?: string;
}

function checkName(name: string, where: string): void {
  // The text is not echoed: a mistyped flag may hold a value where the name should be.
  if (!NAME.test(name)) {
    throw new UserError(
      `Invalid ${where}: expected NAME=VALUE@HOST[,HOST...] or NAME@HOST[,HOST...], where ` +
        "NAME is an environment variable name (letters, digits, _)",
    );
  }
}

function checkValue(name: string, value: string, origin: string): void {
  if (value.length < MIN_SECRET_LENGTH) {
    throw new UserError(
      `Cannot use secret ${name}: its value (${origin}) is shorter than ${MIN_SECRET_LENGTH} ` +
        "characters; shuru replaces it in responses, where a short value would match other text",
    );
  }
  if (/[\r\n\0]/.test(value)) {
    throw new UserError(
      `Cannot use secret ${name}: its value (${origin}) contains a line break or NUL`,
    );
  }
}

function checkHosts(name: string, hosts: string[], where: string): string[] {
  if (hosts.length === 0 || hosts.some((h) => h.trim() === "")) {
    throw new UserError(`Invalid ${where}: secret ${name} needs hosts, e.g. @api.example.com`);
  }
  return hosts.map((h) => {
    try {
      return parseHostPattern(h);
    } catch (err) {
      throw new UserError(`Invalid ${where} for secret ${name}: ${(err as Error).message}`);
    }
  });
}

function fromEnv(name: string, variable: string, env: (n: string) => string | undefined): string {
  const value = env(variable);
  if (value === undefined || value === "") {
    throw new UserError(
      `Cannot use secret ${name}: the host's environment variable ${variable} is not set`,
    );
  }
  return value;
}

/** Checks a secret's `inject` list: places from {@linkcode INJECT_PLACES}, each once. */
function checkInject(name: string, places: unknown, where: string): InjectPlace[] {
  const known = INJECT_PLACES.join(", ");
  if (!Array.isArray(places) || places.length === 0) {
    throw new UserError(`Invalid ${where} for secret ${name}: expected a list of ${known}`);
  }
  const out: InjectPlace[] = [];
  for (const p of places) {
    if (!INJECT_PLACES.includes(p as InjectPlace)) {
      throw new UserError(
        `Invalid ${where} for secret ${name}: "${p}" is not a place (known: ${known})`,
      );
    }
    if (!out.includes(p as InjectPlace)) out.push(p as InjectPlace);
  }
  return out;
}

/**
 * The options after a flag's hosts, `:inject=PLACE[,PLACE...]` and `:allow_http`, as the
 * setting's fields.
 */
function flagOptions(name: string, options: string[]): Pick<SecretSetting, "inject" | "allowHttp"> {
  const out: Pick<SecretSetting, "inject" | "allowHttp"> = {};
  for (const option of options) {
    if (option === "allow_http") out.allowHttp = true;
    else if (option.startsWith("inject=")) {
      out.inject = checkInject(name, option.slice("inject=".length).split(","), "--secret");
    } else {
      throw new UserError(
        `Invalid --secret for ${name}: unknown option "${option}" after the hosts ` +
          "(known: inject=header,query,body and allow_http)",
      );
    }
  }
  return out;
}

/**
 * Parses one `--secret`: `NAME=VALUE@HOST[,HOST...]`, or `NAME@HOST[,HOST...]` (the value
 * from the host's environment variable NAME, which keeps it out of `ps`), each optionally
 * followed by `:inject=PLACE[,PLACE...]` and `:allow_http`. The hosts follow the last `@`, so
 * a value may contain `@`.
 */
export function parseSecretFlag(spec: string, sources: SecretSources = {}): SecretSetting {
  const at = spec.lastIndexOf("@");
  const eq = spec.indexOf("=");
  const head = at < 0 ? spec : spec.slice(0, at);
  const name = eq >= 0 && (at < 0 || eq < at) ? spec.slice(0, eq) : head;
  checkName(name, "--secret");
  if (at < 0) {
    throw new UserError(
      `Invalid --secret for ${name}: expected NAME=VALUE@HOST[,HOST...] or NAME@HOST[,HOST...]`,
    );
  }
  // Host patterns hold no ":", so the first one after the last "@" starts the options.
  const [hostList = "", ...options] = spec.slice(at + 1).split(":");
  const hosts = checkHosts(name, hostList.split(","), "--secret");
  const extra = flagOptions(name, options);
  const env = sources.env ?? ((n) => Deno.env.get(n));
  const value = eq >= 0 && eq < at ? spec.slice(eq + 1, at) : fromEnv(name, name, env);
  checkValue(name, value, eq >= 0 && eq < at ? "from --secret" : `from $${name}`);
  return { name, value, hosts, ...extra };
}

/** Runs a config `command` on the host; its stdout (without the final line break) is the value. */
async function fromCommand(
  name: string,
  command: string,
  cwd: string | undefined,
): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("/bin/sh", {
      args: ["-c", command],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(cwd !== undefined ? { cwd } : {}),
      signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
    }).output();
  } catch (err) {
    throw new UserError(`Cannot run the command of secret ${name}: ${(err as Error).message}`);
  }
  if (!out.success) {
    const said = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    throw new UserError(
      `Cannot get secret ${name}: its command exited with status ${out.code}` +
        (out.signal ? ` (${out.signal}, timeout ${COMMAND_TIMEOUT_MS / 1000} s)` : "") +
        (said ? `: ${said}` : ""),
    );
  }
  return new TextDecoder().decode(out.stdout).replace(/\r?\n$/, "");
}

/**
 * Reads the config's `secrets` object: `{NAME: {value | from_env | command, hosts, inject?,
 * allow_http?}}`, exactly one source each.
 */
export async function parseSecretsConfig(
  config: Record<string, unknown>,
  source: string,
  sources: SecretSources = {},
): Promise<SecretSetting[]> {
  const env = sources.env ?? ((n) => Deno.env.get(n));
  const out: SecretSetting[] = [];
  for (const [name, entry] of Object.entries(config)) {
    const where = `${source}: secrets.${name}`;
    checkName(name, `${source}: secrets`);
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw new UserError(`${where} must be an object {value | from_env | command, hosts}`);
    }
    const e = entry as Record<string, unknown>;
    for (const key of Object.keys(e)) {
      if (!CONFIG_KEYS.includes(key)) {
        throw new UserError(`${where}: unknown key "${key}" (known: ${CONFIG_KEYS.join(", ")})`);
      }
    }
    const given = ["value", "from_env", "command"].filter((k) => e[k] !== undefined);
    if (given.length !== 1) {
      throw new UserError(`${where} needs exactly one of value, from_env, command`);
    }
    const kind = given[0]!;
    if (typeof e[kind] !== "string" || e[kind] === "") {
      throw new UserError(`${where}.${kind} must be a non-empty string`);
    }
    const hostsRaw = e.hosts;
    if (!Array.isArray(hostsRaw) || !hostsRaw.every((h) => typeof h === "string")) {
      throw new UserError(`${where}.hosts must be an array of host patterns`);
    }
    const hosts = checkHosts(name, hostsRaw, `${where}.hosts`);
    const extra: Pick<SecretSetting, "inject" | "allowHttp"> = {};
    if (e.inject !== undefined) extra.inject = checkInject(name, e.inject, `${where}.inject`);
    if (e.allow_http !== undefined) {
      if (typeof e.allow_http !== "boolean") {
        throw new UserError(`${where}.allow_http must be true or false`);
      }
      if (e.allow_http) extra.allowHttp = true;
    }
    let value: string;
    if (kind === "value") value = e.value as string;
    else if (kind === "from_env") value = fromEnv(name, e.from_env as string, env);
    else value = await fromCommand(name, e.command as string, sources.cwd);
    checkValue(name, value, kind === "value" ? `in ${source}` : `from ${kind}`);
    out.push({ name, value, hosts, ...extra });
  }
  return out;
}

/**
 * The run's secrets: the config's, then the flags' (a flag replaces a config secret of the
 * same name, as flags win over the config).
 */
export async function resolveSecrets(
  flags: readonly string[],
  config: { secrets?: Record<string, unknown>; source: string },
  sources: SecretSources = {},
): Promise<SecretSetting[]> {
  const fromFlags = flags.map((f) => parseSecretFlag(f, sources));
  const flagNames = new Set<string>();
  for (const s of fromFlags) {
    if (flagNames.has(s.name)) throw new UserError(`Cannot give --secret ${s.name} twice`);
    flagNames.add(s.name);
  }
  const fromConfig = config.secrets
    ? await parseSecretsConfig(
      Object.fromEntries(Object.entries(config.secrets).filter(([n]) => !flagNames.has(n))),
      config.source,
      sources,
    )
    : [];
  return [...fromConfig, ...fromFlags];
}
