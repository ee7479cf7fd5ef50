/**
 * One description of a sandbox ({@linkcode SandboxSpec}): what every edge (flags, `shuru.json`,
 * the SDK's options as `--spec` JSON, the MCP tools through the SDK) turns its input into and
 * {@linkcode resolveSpec} validates once; the runner boots it, the supervisor carries it. Also the
 * string forms of its settings and `shuru.json`.
 *
 * @module
 */

export {
  type MountSpec,
  type NetworkSpec,
  parseSpecLayer,
  type PortMapping,
  resolveSpec,
  type ResolveSpecOptions,
  type SandboxSpec,
  type SecretSetting,
  SPEC_DEFAULTS,
  type SpecLayer,
} from "./spec.ts";
export { SpecError, type SpecErrorCode } from "./errors.ts";
export {
  type AddHost,
  checkMount,
  parseAddHost,
  parseEnvPair,
  parseExposeHost,
  parseMountSpec,
  parsePortMapping,
  parsePositiveInt,
  parseSizeMiB,
  pick,
} from "./parse.ts";
export { configLayer, loadConfig, type ShuruConfig, validateConfig } from "./config.ts";
export { formatDuration, MAX_DURATION_MS, parseDuration } from "./duration.ts";
