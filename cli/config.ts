/**
 * `shuru.json`: the project config file, and how it merges with command-line flags.
 *
 * Resolution per field: CLI flag > config file > default. Lists (ports, mounts, hosts, ...)
 * concatenate, config first. Unknown keys are rejected with the key named, so a typo never
 * silently turns a setting off.
 *
 * @module
 */

import { UserError } from "./errors.ts";

/** A host port forwarded to a guest port (`-p HOST:GUEST`). */
export interface PortMapping {
  /** Port bound on the host's 127.0.0.1. */
  host: number;
  /** Port in the guest. */
  guest: number;
}

/** A host folder shared with the guest (`--mount HOST:GUEST[:ro|:rw]`). */
export interface MountSpec {
  /** Host folder (as written; resolved against the current directory by the caller). */
  host: string;
  /** Absolute guest path. */
  guest: string;
  /** `false` only for `:rw` mounts, which need `--allow-host-writes`. */
  readOnly: boolean;
}

/** The contents of a `shuru.json`, after validation. Every field is optional. */
export interface ShuruConfig {
  cpus?: number;
  memory?: number;
  disk_size?: number;
  accel?: "kvm" | "tcg" | "auto";
  allow_net?: boolean;
  allow_host_writes?: boolean;
  allow_private?: boolean;
  ports?: string[];
  mounts?: string[];
  command?: string[];
  from?: string;
  image?: string;
  kernel?: string;
  initrd?: string;
  rootfs?: string;
  expose_host?: string[];
  secrets?: Record<string, unknown>;
  network?: { allow?: string[]; hosts?: string[] };
}

type FieldKind = "int" | "bool" | "strings" | "string" | "accel" | "object" | "network";

const FIELDS: Record<keyof ShuruConfig, FieldKind> = {
  cpus: "int",
  memory: "int",
  disk_size: "int",
  accel: "accel",
  allow_net: "bool",
  allow_host_writes: "bool",
  allow_private: "bool",
  ports: "strings",
  mounts: "strings",
  command: "strings",
  from: "string",
  image: "string",
  kernel: "string",
  initrd: "string",
  rootfs: "string",
  expose_host: "strings",
  secrets: "object",
  network: "network",
};

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

/**
 * Validates parsed JSON as a {@linkcode ShuruConfig}. `source` names the file in errors.
 *
 * @throws {UserError} on an unknown key or a value of the wrong type.
 */
export function validateConfig(value: unknown, source: string): ShuruConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UserError(`${source}: expected a JSON object at the top level`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!Object.hasOwn(FIELDS, key)) {
      const known = Object.keys(FIELDS).join(", ");
      throw new UserError(`${source}: unknown key "${key}" (known keys: ${known})`);
    }
    const kind = FIELDS[key as keyof ShuruConfig];
    const bad = (want: string) =>
      new UserError(
        // Never echo secrets: the bad value may be one.
        `${source}: "${key}" must be ${want}` +
          (key === "secrets" ? "" : `, got ${JSON.stringify(v)}`),
      );
    switch (kind) {
      case "int":
        if (!Number.isInteger(v) || (v as number) <= 0) throw bad("a positive integer");
        break;
      case "bool":
        if (typeof v !== "boolean") throw bad("true or false");
        break;
      case "string":
        if (typeof v !== "string" || v === "") throw bad("a non-empty string");
        break;
      case "strings":
        if (!isStringArray(v)) throw bad("an array of strings");
        break;
      case "accel":
        if (v !== "kvm" && v !== "tcg" && v !== "auto") throw bad('"kvm", "tcg" or "auto"');
        break;
      case "object":
        if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("an object");
        break;
      case "network": {
        if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("an object");
        for (const [nk, nv] of Object.entries(v)) {
          if (nk !== "allow" && nk !== "hosts") {
            throw new UserError(`${source}: unknown key "network.${nk}" (known: allow, hosts)`);
          }
          if (!isStringArray(nv)) {
            throw new UserError(`${source}: "network.${nk}" must be an array of strings`);
          }
        }
        break;
      }
    }
    out[key] = v;
  }
  return out as ShuruConfig;
}

/**
 * Reads and validates a config file. A missing file is an empty config unless `required`
 * (the user named it with `--config`).
 */
export async function loadConfig(
  path: string,
  options: { required?: boolean } = {},
): Promise<ShuruConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && !options.required) return {};
    if (err instanceof Deno.errors.NotFound) {
      throw new UserError(`Cannot read config ${path}: no such file`);
    }
    throw new UserError(`Cannot read config ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: invalid JSON: ${(err as Error).message}`);
  }
  return validateConfig(parsed, path);
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new UserError(`Invalid ${what} "${text}": not a port number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new UserError(`Invalid ${what} "${text}": must be 1-65535`);
  return n;
}

/** Parses `HOST:GUEST` port mappings. */
export function parsePortMapping(spec: string): PortMapping {
  const parts = spec.split(":");
  if (parts.length !== 2) {
    throw new UserError(`Invalid port mapping "${spec}": expected HOST:GUEST, e.g. 8080:80`);
  }
  return {
    host: parsePort(parts[0]!, `host port in "${spec}"`),
    guest: parsePort(parts[1]!, `guest port in "${spec}"`),
  };
}

/** An `--add-host NAME:IP` entry. */
export interface AddHost {
  /** Host name. */
  name: string;
  /** IPv4 address it reaches (on the host's side). */
  ip: string;
}

/** Parses `--add-host NAME:IP` (config `network.hosts`). */
export function parseAddHost(spec: string): AddHost {
  const colon = spec.lastIndexOf(":");
  const name = spec.slice(0, colon).trim();
  const ip = spec.slice(colon + 1).trim();
  const octets = ip.split(".");
  const ipOk = octets.length === 4 &&
    octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255);
  if (colon <= 0 || name === "" || !ipOk) {
    throw new UserError(
      `Invalid --add-host "${spec}": expected NAME:IPV4, e.g. api.test:127.0.0.1`,
    );
  }
  return { name, ip };
}

/** An `--expose-host PORT[:HOSTPORT]` entry. */
export interface ExposeHost {
  /** Port of host.shuru.internal in the guest. */
  guestPort: number;
  /** Port on the host's 127.0.0.1. */
  hostPort: number;
}

/** Parses `--expose-host PORT[:HOSTPORT]` (config `expose_host`). */
export function parseExposeHost(spec: string): ExposeHost {
  const parts = spec.split(":");
  if (parts.length > 2) {
    throw new UserError(`Invalid --expose-host "${spec}": expected PORT or PORT:HOSTPORT`);
  }
  const guestPort = parsePort(parts[0]!, `port in --expose-host "${spec}"`);
  const hostPort = parts.length === 2
    ? parsePort(parts[1]!, `host port in --expose-host "${spec}"`)
    : guestPort;
  return { guestPort, hostPort };
}

/**
 * Parses `HOST:GUEST[:ro|:rw]`. Checks the form only; {@linkcode checkMount} checks the host.
 */
export function parseMountSpec(spec: string): MountSpec {
  const parts = spec.split(":");
  let mode = "ro";
  if (parts.length === 3) mode = parts.pop()!;
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
    throw new UserError(
      `Invalid mount "${spec}": expected HOST:GUEST[:ro|:rw], e.g. ./src:/work:ro`,
    );
  }
  if (mode !== "ro" && mode !== "rw") {
    throw new UserError(`Invalid mount "${spec}": mode must be "ro" or "rw", got "${mode}"`);
  }
  const guest = parts[1]!;
  if (!guest.startsWith("/")) {
    throw new UserError(`Invalid mount "${spec}": guest path "${guest}" must be absolute`);
  }
  return { host: parts[0]!, guest, readOnly: mode === "ro" };
}

/**
 * Checks a mount against the host: the folder must exist, and `:rw` needs
 * `allowHostWrites`.
 */
export function checkMount(mount: MountSpec, allowHostWrites: boolean): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(mount.host);
  } catch {
    throw new UserError(`Cannot mount ${mount.host}: no such file or directory on the host`);
  }
  if (!info.isDirectory) {
    throw new UserError(`Cannot mount ${mount.host}: not a directory`);
  }
  if (!mount.readOnly && !allowHostWrites) {
    throw new UserError(
      `Cannot mount ${mount.host} read-write: pass --allow-host-writes (or set ` +
        `"allow_host_writes": true) to let the guest change host files`,
    );
  }
}

/** Picks the first defined value: CLI flag, then config, then default. */
export function pick<T>(flag: T | undefined, config: T | undefined, fallback: T): T {
  if (flag !== undefined) return flag;
  if (config !== undefined) return config;
  return fallback;
}
