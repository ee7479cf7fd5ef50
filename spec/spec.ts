/**
 * One description of a sandbox: {@linkcode SandboxSpec}. Every edge turns its input into one
 * (command-line flags and `shuru.json` in cli/, `--spec` JSON from the SDK, the MCP tools through
 * the SDK) and {@linkcode resolveSpec} validates it once; the runner boots it and the supervisor
 * carries it unchanged.
 *
 * Adding a setting: a field in {@linkcode SandboxSpec} (with its default in
 * {@linkcode SPEC_DEFAULTS} when it has one) and its check in {@linkcode FIELDS}; then its edge
 * forms (a flag in cli/run.ts, a key in config.ts) if users write it there.
 *
 * @module
 */

import { resolve } from "node:path";
import { type GuestArch, nameProblem, parseArch } from "../host/mod.ts";
import { parseImageReference } from "../image/mod.ts";
import { looksLikeReference, parseReference } from "../oci/mod.ts";
import { type ExposedPort, INJECT_PLACES, type InjectPlace, NetworkPolicy } from "../proxy/mod.ts";
import { type AccelChoice, type BackendName, parseAccel, parseBackend } from "../vm/mod.ts";
import { MAX_DURATION_MS } from "./duration.ts";
import { SpecError } from "./errors.ts";
import { checkMount } from "./parse.ts";

/** A host folder shared with the guest (`--mount HOST:GUEST[:ro|:rw]`). */
export interface MountSpec {
  /** Host folder (absolute once resolved). */
  host: string;
  /** Absolute guest path. */
  guest: string;
  /** `false` only for `:rw` mounts, which need `--allow-host-writes`. */
  readOnly: boolean;
}

/** A host port forwarded to a guest port (`-p HOST:GUEST`). */
export interface PortMapping {
  /** Port bound on the host's 127.0.0.1. */
  host: number;
  /** Port in the guest. */
  guest: number;
}

/** A secret (`--secret`): its name in the guest, its real value and the hosts that receive it. */
export interface SecretSetting {
  /** Environment variable name in the guest. */
  name: string;
  /** The real value. */
  value: string;
  /** Host patterns (`api.example.com`, `*.example.com`). */
  hosts: string[];
  /** Where a request may carry the value; absent: credential headers only. */
  inject?: InjectPlace[];
  /** Also over plain HTTP (absent: HTTP requests keep the placeholder). */
  allowHttp?: boolean;
}

/** What the guest may reach (`--allow-net` and friends); plain data (JSON-safe). */
export interface NetworkSpec {
  /** `--allow-net`: public destinations open. Implied by `allowHosts` and secrets. */
  allowNet?: boolean;
  /** `--allow-host` patterns (`example.com`, `*.example.com`). */
  allowHosts?: string[];
  /** `--add-host NAME:IP`, as `{ NAME: IP }`. */
  addHosts?: Record<string, string>;
  /** `--allow-private`: private and special ranges open too. */
  allowPrivate?: boolean;
  /** `--expose-host`: guest ports of `host.shuru.internal` → host loopback ports. */
  exposeHost?: ExposedPort[];
  /**
   * `--secret`: values swapped in on the way to their hosts. Never persisted: a supervisor
   * gets them apart from its spec.
   */
  secrets?: SecretSetting[];
  /** `--net-log`: append one JSON line per guest connection to this file (absolute). */
  netLog?: string;
}

/** A sandbox, as every layer above the edge sees it: validated, defaults filled in. */
export interface SandboxSpec {
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Disk size in MiB; the guest's root filesystem grows to fill it. */
  diskSizeMiB: number;
  /** `kvm`, `tcg` or `auto` (KVM only when it works); QEMU only. */
  accel: AccelChoice;
  /** The VM backend: `vz` (macOS only) or `qemu`; default `vz` on macOS, `qemu` elsewhere. */
  backend: BackendName;
  /**
   * The guest's CPU architecture (`--arch`); absent: the checkpoint's with `from` (another one is
   * refused at boot), else the host's. Another architecture than the host's runs emulated.
   */
  arch?: GuestArch;
  /**
   * Start from this checkpoint instead of the base image: a local name, or a registry
   * reference (`registry/repo:tag`), read lazily: chunks are fetched on first read.
   */
  from?: string;
  /**
   * An OCI image as the root filesystem (`--image`): a registry reference, `oci:DIR[:TAG]` or
   * `docker-archive:FILE` (paths absolute once resolved); converted and cached on first use.
   */
  image?: string;
  /** A kernel of the user's (`--kernel`, absolute): a PVH ELF, or a bzImage. */
  kernel?: string;
  /** An initramfs of the user's (`--initrd`, absolute), replacing shuru's. */
  initrd?: string;
  /** An ext4 image of the user's as the root filesystem (`--rootfs`, absolute); never written. */
  rootfs?: string;
  /**
   * Registry hosts `from` and `image` may reach over plain HTTP besides loopback
   * (`--insecure-registry`).
   */
  insecureRegistries?: string[];
  /** Host folders to share (host paths absolute). */
  mounts: MountSpec[];
  /** Host ports forwarded to the guest. */
  ports: PortMapping[];
  /** The guest's network; absent: no network device at all. */
  network?: NetworkSpec;
  /** The command to run (`shuru run`); absent: an interactive shell. */
  command?: string[];
  /** Environment variables of the command. */
  env: Record<string, string>;
  /** Absolute working directory of the command in the guest. */
  cwd?: string;
  /** Named sandboxes: stop after this long without a client. */
  idleTimeoutMs?: number;
  /** Named sandboxes: stop after this long in total. */
  timeoutMs?: number;
}

/** One source of settings (flags, `--spec`, `shuru.json`): any field, not yet validated. */
export type SpecLayer = Partial<Omit<SandboxSpec, "network">> & { network?: NetworkSpec };

/** The defaults of {@linkcode SandboxSpec}'s required fields. */
export const SPEC_DEFAULTS: Readonly<Pick<SandboxSpec, "cpus" | "memoryMiB" | "diskSizeMiB">> = {
  cpus: 2,
  memoryMiB: 2048,
  diskSizeMiB: 4096,
};

function invalid(message: string): SpecError {
  return new SpecError("invalid_setting", message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStrings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

function positiveInt(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= max;
}

function port(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;
}

/** Checks one field of untrusted input; returns what is wrong with it, or undefined. */
type FieldCheck = (v: unknown) => string | undefined;

/**
 * The fields of {@linkcode SandboxSpec} and how each is checked when it arrives as JSON
 * (`--spec`, the SDK's options). A field missing here is refused by name.
 */
const FIELDS: Record<keyof SandboxSpec, FieldCheck> = {
  cpus: (v) => positiveInt(v, 256) ? undefined : "a whole number from 1 to 256",
  memoryMiB: (v) => positiveInt(v) ? undefined : "a positive whole number of MiB",
  diskSizeMiB: (v) => positiveInt(v) ? undefined : "a positive whole number of MiB",
  accel: (v) => v === "kvm" || v === "tcg" || v === "auto" ? undefined : '"kvm", "tcg" or "auto"',
  backend: (v) => v === "qemu" || v === "vz" ? undefined : '"vz" or "qemu"',
  arch: (v) => v === "x86_64" || v === "arm64" ? undefined : '"x86_64" or "arm64"',
  from: (v) =>
    typeof v === "string" && v !== "" ? undefined : "a checkpoint name or registry reference",
  image: (v) =>
    typeof v === "string" && v !== ""
      ? undefined
      : "an image reference (registry/repo:tag, oci:DIR[:TAG], docker-archive:FILE)",
  kernel: (v) => typeof v === "string" && v !== "" ? undefined : "a kernel file path",
  initrd: (v) => typeof v === "string" && v !== "" ? undefined : "an initramfs file path",
  rootfs: (v) => typeof v === "string" && v !== "" ? undefined : "an ext4 image file path",
  insecureRegistries: (v) => isStrings(v) ? undefined : "an array of registry hosts",
  mounts: (v) =>
    Array.isArray(v) &&
      v.every((m) =>
        isObject(m) && typeof m.host === "string" && typeof m.guest === "string" &&
        typeof m.readOnly === "boolean"
      )
      ? undefined
      : "an array of {host, guest, readOnly}",
  ports: (v) =>
    Array.isArray(v) && v.every((p) => isObject(p) && port(p.host) && port(p.guest))
      ? undefined
      : "an array of {host, guest} ports",
  network: (v) => isObject(v) ? undefined : "an object",
  command: (v) => isStrings(v) && v.length > 0 ? undefined : "a non-empty array of strings",
  env: (v) =>
    isObject(v) && Object.values(v).every((x) => typeof x === "string")
      ? undefined
      : "an object of strings",
  cwd: (v) => typeof v === "string" ? undefined : "an absolute guest path",
  idleTimeoutMs: (v) =>
    positiveInt(v, MAX_DURATION_MS) ? undefined : "milliseconds (at most 24 days)",
  timeoutMs: (v) => positiveInt(v, MAX_DURATION_MS) ? undefined : "milliseconds (at most 24 days)",
};

/** The fields of {@linkcode NetworkSpec} and their checks (as {@linkcode FIELDS}). */
const NETWORK_FIELDS: Record<keyof NetworkSpec, FieldCheck> = {
  allowNet: (v) => typeof v === "boolean" ? undefined : "true or false",
  allowHosts: (v) => isStrings(v) ? undefined : "an array of host patterns",
  addHosts: (v) =>
    isObject(v) && Object.values(v).every((x) => typeof x === "string")
      ? undefined
      : "an object of NAME: IPV4",
  allowPrivate: (v) => typeof v === "boolean" ? undefined : "true or false",
  exposeHost: (v) =>
    Array.isArray(v) && v.every((e) => isObject(e) && port(e.guestPort) && port(e.hostPort))
      ? undefined
      : "an array of {guestPort, hostPort}",
  secrets: (v) =>
    Array.isArray(v) &&
      v.every((s) =>
        isObject(s) && typeof s.name === "string" && typeof s.value === "string" &&
        isStrings(s.hosts) &&
        (s.inject === undefined ||
          (Array.isArray(s.inject) &&
            s.inject.every((p) => INJECT_PLACES.includes(p as InjectPlace)))) &&
        (s.allowHttp === undefined || typeof s.allowHttp === "boolean")
      )
      ? undefined
      : `an array of {name, value, hosts, inject?: [${INJECT_PLACES.join(", ")}], allowHttp?}`,
  netLog: (v) => typeof v === "string" && v !== "" ? undefined : "a file path",
};

function checkFields<T>(
  value: unknown,
  fields: Record<string, FieldCheck>,
  where: string,
): T {
  if (!isObject(value)) throw invalid(`Invalid ${where}: expected a JSON object`);
  for (const [key, v] of Object.entries(value)) {
    if (v === undefined) continue;
    const check = fields[key];
    if (!check) {
      throw invalid(
        `Invalid ${where}: unknown field "${key}" (known: ${Object.keys(fields).join(", ")})`,
      );
    }
    const want = check(v);
    // Never echo secrets: the bad value may be one.
    if (want) throw invalid(`Invalid ${where}: "${key}" must be ${want}`);
  }
  return value as T;
}

/**
 * Checks untrusted JSON (`--spec`, the SDK's options, a supervisor's spec) field by field and
 * returns it as a layer; `source` names it in errors.
 *
 * @throws {SpecError} naming the first unknown or bad field.
 */
export function parseSpecLayer(value: unknown, source: string): SpecLayer {
  const layer = checkFields<SpecLayer>(value, FIELDS, source);
  if (layer.network !== undefined) {
    checkFields<NetworkSpec>(layer.network, NETWORK_FIELDS, `${source} network`);
  }
  return layer;
}

/** Options of {@linkcode resolveSpec}. */
export interface ResolveSpecOptions {
  /** Allow read-write mounts (`--allow-host-writes`). */
  allowHostWrites?: boolean;
  /** Check that mounted host folders exist (default true). */
  checkHost?: boolean;
}

/** First defined value of `key` across `layers` (the first layer wins). */
function first<K extends keyof SpecLayer>(
  layers: readonly SpecLayer[],
  key: K,
): SpecLayer[K] | undefined {
  for (const l of layers) if (l[key] !== undefined) return l[key];
  return undefined;
}

function firstNet<K extends keyof NetworkSpec>(
  layers: readonly SpecLayer[],
  key: K,
): NetworkSpec[K] | undefined {
  for (const l of layers) if (l.network?.[key] !== undefined) return l.network[key];
  return undefined;
}

/** Lists of every layer, the last layer's first (config, then flags, as `shuru.json` documents). */
function all<T>(layers: readonly SpecLayer[], get: (l: SpecLayer) => T[] | undefined): T[] {
  return [...layers].reverse().flatMap((l) => get(l) ?? []);
}

/** Merges the network layers; undefined when the guest gets no network device. */
function resolveNetwork(layers: readonly SpecLayer[]): NetworkSpec | undefined {
  const secrets = all(layers, (l) => l.network?.secrets);
  const allowHosts = all(layers, (l) => l.network?.allowHosts);
  // With an allow-list, a secret's hosts are allowed too: a value for a host the guest may not
  // reach would be useless. Without one every public name is open already.
  if (allowHosts.length > 0) {
    for (const h of secrets.flatMap((s) => s.hosts)) {
      if (!allowHosts.includes(h)) allowHosts.push(h);
    }
  }
  const addHosts: Record<string, string> = {};
  for (const l of [...layers].reverse()) Object.assign(addHosts, l.network?.addHosts ?? {});
  const exposeHost = all(layers, (l) => l.network?.exposeHost);
  const seen = new Set<number>();
  for (const e of exposeHost) {
    if (seen.has(e.guestPort)) {
      throw invalid(`Cannot expose host.shuru.internal:${e.guestPort} twice`);
    }
    seen.add(e.guestPort);
  }
  const allowNet = (firstNet(layers, "allowNet") ?? false) || allowHosts.length > 0 ||
    secrets.length > 0;
  const netLog = firstNet(layers, "netLog");
  if (!allowNet && exposeHost.length === 0) {
    if (netLog !== undefined) {
      throw invalid("Cannot use --net-log without a network: add --allow-net");
    }
    return undefined;
  }
  const network: NetworkSpec = {
    allowNet,
    allowHosts,
    addHosts,
    allowPrivate: firstNet(layers, "allowPrivate") ?? false,
    exposeHost,
    ...(secrets.length > 0 ? { secrets } : {}),
    ...(netLog !== undefined ? { netLog: resolve(netLog) } : {}),
  };
  try {
    // Every pattern and address, checked by the policy that will apply them.
    new NetworkPolicy(network);
  } catch (err) {
    throw invalid((err as Error).message);
  }
  return network;
}

/** Checks `--from`: a local checkpoint name, or a registry reference (it has `/`, `:` or `@`). */
function checkFrom(from: string): void {
  if (looksLikeReference(from)) {
    try {
      parseReference(from);
    } catch (err) {
      throw invalid(`Invalid --from: ${(err as Error).message}`);
    }
    return;
  }
  const problem = nameProblem("checkpoint", from);
  if (problem) throw invalid(`Invalid --from: ${problem}`);
}

/**
 * Checks `--image` and makes the path of a local image (`oci:DIR[:TAG]`,
 * `docker-archive:FILE[:NAME]`) absolute, so the reference means the same from any folder.
 */
function resolveImage(text: string): string {
  let ref;
  try {
    ref = parseImageReference(text);
  } catch (err) {
    throw invalid((err as Error).message);
  }
  if (ref.kind === "oci") {
    return `oci:${resolve(ref.dir)}${ref.tag !== undefined ? `:${ref.tag}` : ""}`;
  }
  if (ref.kind === "docker-archive") {
    return `docker-archive:${resolve(ref.file)}${ref.name !== undefined ? `:${ref.name}` : ""}`;
  }
  return text;
}

/** The root filesystem settings: at most one of `image`, `rootfs` and `from`. */
function resolveRoot(
  layers: readonly SpecLayer[],
): Pick<SandboxSpec, "from" | "image" | "rootfs"> {
  const from = first(layers, "from");
  const image = first(layers, "image");
  const rootfs = first(layers, "rootfs");
  const given = [["--image", image], ["--rootfs", rootfs], ["--from", from]]
    .filter(([, v]) => v !== undefined).map(([flag]) => flag);
  if (given.length > 1) {
    throw invalid(`Cannot use ${given.join(" and ")} together: each names the root filesystem`);
  }
  if (from !== undefined) checkFrom(from);
  return {
    ...(from !== undefined ? { from } : {}),
    ...(image !== undefined ? { image: resolveImage(image) } : {}),
    ...(rootfs !== undefined ? { rootfs: resolve(rootfs) } : {}),
  };
}

/**
 * Merges `layers` (the first wins for a single value; lists concatenate, the last layer's
 * first), fills in the defaults and validates the result: the one check every sandbox passes
 * before anything boots.
 *
 * @throws {SpecError} naming the setting.
 */
export function resolveSpec(
  layers: readonly SpecLayer[],
  options: ResolveSpecOptions = {},
): SandboxSpec {
  const mounts = all(layers, (l) => l.mounts);
  if (options.checkHost ?? true) {
    for (const m of mounts) checkMount(m, options.allowHostWrites ?? false);
  }
  const ports = all(layers, (l) => l.ports);
  const seen = new Set<number>();
  for (const p of ports) {
    if (seen.has(p.host)) throw invalid(`Cannot forward host port ${p.host} twice`);
    seen.add(p.host);
  }
  const env: Record<string, string> = {};
  for (const l of [...layers].reverse()) Object.assign(env, l.env ?? {});
  const cwd = first(layers, "cwd");
  if (cwd !== undefined && !cwd.startsWith("/")) {
    throw invalid(`Invalid --cwd "${cwd}": must be an absolute guest path`);
  }
  let accel: AccelChoice;
  try {
    accel = parseAccel(first(layers, "accel") ?? "auto");
  } catch (err) {
    throw invalid((err as Error).message);
  }
  let backend: BackendName;
  try {
    backend = parseBackend(first(layers, "backend"));
  } catch (err) {
    throw invalid((err as Error).message);
  }
  const root = resolveRoot(layers);
  const archText = first(layers, "arch");
  const arch = archText !== undefined ? parseArch(archText) : undefined;
  if (archText !== undefined && arch === undefined) {
    throw invalid(`Invalid --arch ${JSON.stringify(archText)}: use x86_64 or arm64`);
  }
  const kernel = first(layers, "kernel");
  const initrd = first(layers, "initrd");
  const insecureRegistries = [...new Set(all(layers, (l) => l.insecureRegistries))];
  const command = first(layers, "command");
  const network = resolveNetwork(layers);
  const idleTimeoutMs = first(layers, "idleTimeoutMs");
  const timeoutMs = first(layers, "timeoutMs");
  return {
    cpus: first(layers, "cpus") ?? SPEC_DEFAULTS.cpus,
    memoryMiB: first(layers, "memoryMiB") ?? SPEC_DEFAULTS.memoryMiB,
    diskSizeMiB: first(layers, "diskSizeMiB") ?? SPEC_DEFAULTS.diskSizeMiB,
    accel,
    backend,
    ...(arch !== undefined ? { arch } : {}),
    ...root,
    ...(kernel !== undefined ? { kernel: resolve(kernel) } : {}),
    ...(initrd !== undefined ? { initrd: resolve(initrd) } : {}),
    ...(insecureRegistries.length > 0 ? { insecureRegistries } : {}),
    mounts: mounts.map((m) => ({ ...m, host: resolve(m.host) })),
    ports,
    ...(network ? { network } : {}),
    ...(command && command.length > 0 ? { command } : {}),
    env,
    ...(cwd !== undefined ? { cwd } : {}),
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  };
}
