/**
 * The string forms of sandbox settings, as flags and `shuru.json` write them: `8080:80`,
 * `./src:/work:ro`, `api.test:127.0.0.1`, `8080:3000`, `2G`, `KEY=VALUE`. Each parser checks the
 * form only and throws {@linkcode SpecError} naming the setting; {@linkcode checkMount} checks a
 * mount against the host.
 *
 * @module
 */

import type { ExposedPort } from "../proxy/mod.ts";
import { SpecError } from "./errors.ts";
import type { MountSpec, PortMapping } from "./spec.ts";

function invalid(message: string): SpecError {
  return new SpecError("invalid_setting", message);
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw invalid(`Invalid ${what} "${text}": not a port number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw invalid(`Invalid ${what} "${text}": must be 1-65535`);
  return n;
}

/** Parses `HOST:GUEST` port mappings (`-p`, config `ports`). */
export function parsePortMapping(spec: string): PortMapping {
  const parts = spec.split(":");
  if (parts.length !== 2) {
    throw invalid(`Invalid port mapping "${spec}": expected HOST:GUEST, e.g. 8080:80`);
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
    throw invalid(`Invalid --add-host "${spec}": expected NAME:IPV4, e.g. api.test:127.0.0.1`);
  }
  return { name, ip };
}

/** Parses `--expose-host PORT[:HOSTPORT]` (config `expose_host`). */
export function parseExposeHost(spec: string): ExposedPort {
  const parts = spec.split(":");
  if (parts.length > 2) {
    throw invalid(`Invalid --expose-host "${spec}": expected PORT or PORT:HOSTPORT`);
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
    throw invalid(`Invalid mount "${spec}": expected HOST:GUEST[:ro|:rw], e.g. ./src:/work:ro`);
  }
  if (mode !== "ro" && mode !== "rw") {
    throw invalid(`Invalid mount "${spec}": mode must be "ro" or "rw", got "${mode}"`);
  }
  const guest = parts[1]!;
  if (!guest.startsWith("/")) {
    throw invalid(`Invalid mount "${spec}": guest path "${guest}" must be absolute`);
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
    throw invalid(`Cannot mount ${mount.host}: no such file or directory on the host`);
  }
  if (!info.isDirectory) {
    throw invalid(`Cannot mount ${mount.host}: not a directory`);
  }
  if (!mount.readOnly && !allowHostWrites) {
    throw invalid(
      `Cannot mount ${mount.host} read-write: pass --allow-host-writes (or set ` +
        `"allow_host_writes": true) to let the guest change host files`,
    );
  }
}

/** Parses a positive whole number for `flag` (`--cpus 2`). */
export function parsePositiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw invalid(`Invalid ${flag} "${value}": expected a positive whole number`);
  }
  return Number(value);
}

/** Parses a size in MiB for `flag`: `4096`, `512M`, `4G` (`--memory`, `--disk-size`). */
export function parseSizeMiB(flag: string, value: string): number {
  const m = /^(\d+)([MmGg]i?[Bb]?)?$/.exec(value);
  const n = m ? Number(m[1]) * (m[2] && /^[Gg]/.test(m[2]) ? 1024 : 1) : NaN;
  if (!(n > 0) || !Number.isSafeInteger(n)) {
    throw invalid(`Invalid ${flag} "${value}": expected MiB (e.g. 4096) or 512M / 4G`);
  }
  return n;
}

/** Parses `KEY=VALUE` for `flag` (`-e`) into `env`, returning it. */
export function parseEnvPair(
  flag: string,
  value: string,
  env: Record<string, string> = {},
): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw invalid(`Invalid ${flag} "${value}": expected KEY=VALUE`);
  return { ...env, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** Picks the first defined value: CLI flag, then config, then default. */
export function pick<T>(flag: T | undefined, config: T | undefined, fallback: T): T {
  if (flag !== undefined) return flag;
  if (config !== undefined) return config;
  return fallback;
}
