/**
 * `shuru.json`: the project config file, one edge form of a sandbox's settings
 * ({@linkcode configLayer} turns it into a spec layer).
 *
 * Resolution per field: CLI flag > config file > default. Lists (ports, mounts, hosts, ...)
 * concatenate, config first. Unknown keys are rejected with the key named, so a typo never
 * silently turns a setting off.
 *
 * @module
 */

import { SpecError } from "./errors.ts";
import { parseAddHost, parseExposeHost, parseMountSpec, parsePortMapping } from "./parse.ts";
import type { GuestArch } from "../host/mod.ts";
import type { SpecLayer } from "./spec.ts";

/** The contents of a `shuru.json`, after validation. Every field is optional. */
export interface ShuruConfig {
  cpus?: number;
  memory?: number;
  disk_size?: number;
  accel?: "kvm" | "tcg" | "auto";
  backend?: "vz" | "qemu";
  arch?: string;
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
  insecure_registries?: string[];
  expose_host?: string[];
  secrets?: Record<string, unknown>;
  network?: { allow?: string[]; hosts?: string[] };
}

type FieldKind =
  | "int"
  | "bool"
  | "strings"
  | "string"
  | "accel"
  | "backend"
  | "object"
  | "network";

const FIELDS: Record<keyof ShuruConfig, FieldKind> = {
  cpus: "int",
  memory: "int",
  disk_size: "int",
  accel: "accel",
  backend: "backend",
  arch: "string",
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
  insecure_registries: "strings",
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
 * @throws {SpecError} on an unknown key or a value of the wrong type.
 */
export function validateConfig(value: unknown, source: string): ShuruConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SpecError(
      "invalid_config_file",
      `${source}: expected a JSON object at the top level`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!Object.hasOwn(FIELDS, key)) {
      const known = Object.keys(FIELDS).join(", ");
      throw new SpecError(
        "invalid_config_file",
        `${source}: unknown key "${key}" (known keys: ${known})`,
      );
    }
    const kind = FIELDS[key as keyof ShuruConfig];
    const bad = (want: string) =>
      new SpecError(
        "invalid_config_file",
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
      case "backend":
        if (v !== "vz" && v !== "qemu") throw bad('"vz" or "qemu"');
        break;
      case "object":
        if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("an object");
        break;
      case "network": {
        if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("an object");
        for (const [nk, nv] of Object.entries(v)) {
          if (nk !== "allow" && nk !== "hosts") {
            throw new SpecError(
              "invalid_config_file",
              `${source}: unknown key "network.${nk}" (known: allow, hosts)`,
            );
          }
          if (!isStringArray(nv)) {
            throw new SpecError(
              "invalid_config_file",
              `${source}: "network.${nk}" must be an array of strings`,
            );
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
      throw new SpecError("invalid_config_file", `Cannot read config ${path}: no such file`);
    }
    throw new SpecError(
      "invalid_config_file",
      `Cannot read config ${path}: ${(err as Error).message}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SpecError("invalid_config_file", `${path}: invalid JSON: ${(err as Error).message}`);
  }
  return validateConfig(parsed, path);
}

/**
 * The settings of a config file as a spec layer. Its `secrets` need the host (environment,
 * commands): the CLI resolves them; `allow_host_writes` is a consent, not a setting.
 */
export function configLayer(config: ShuruConfig): SpecLayer {
  const layer: SpecLayer = {};
  if (config.cpus !== undefined) layer.cpus = config.cpus;
  if (config.memory !== undefined) layer.memoryMiB = config.memory;
  if (config.disk_size !== undefined) layer.diskSizeMiB = config.disk_size;
  if (config.accel !== undefined) layer.accel = config.accel;
  if (config.backend !== undefined) layer.backend = config.backend;
  if (config.arch !== undefined) layer.arch = config.arch as GuestArch;
  if (config.from !== undefined) layer.from = config.from;
  if (config.image !== undefined) layer.image = config.image;
  if (config.kernel !== undefined) layer.kernel = config.kernel;
  if (config.initrd !== undefined) layer.initrd = config.initrd;
  if (config.rootfs !== undefined) layer.rootfs = config.rootfs;
  if (config.insecure_registries) layer.insecureRegistries = config.insecure_registries;
  if (config.command !== undefined) layer.command = config.command;
  if (config.mounts) layer.mounts = config.mounts.map(parseMountSpec);
  if (config.ports) layer.ports = config.ports.map(parsePortMapping);
  const addHosts: Record<string, string> = {};
  for (const spec of config.network?.hosts ?? []) {
    const { name, ip } = parseAddHost(spec);
    addHosts[name] = ip;
  }
  layer.network = {
    ...(config.allow_net !== undefined ? { allowNet: config.allow_net } : {}),
    ...(config.allow_private !== undefined ? { allowPrivate: config.allow_private } : {}),
    ...(config.network?.allow ? { allowHosts: config.network.allow } : {}),
    ...(config.network?.hosts ? { addHosts } : {}),
    ...(config.expose_host ? { exposeHost: config.expose_host.map(parseExposeHost) } : {}),
  };
  return layer;
}
