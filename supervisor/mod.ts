/**
 * Named sandboxes: a detached supervisor per sandbox (owning QEMU and the NBD server, serving the
 * control protocol on `<instance>/control.sock`) and a registry of them under
 * `<home>/sandboxes/`. See docs/sandboxes.md.
 *
 * @module
 */

export { formatDuration, MAX_DURATION_MS, parseDuration } from "./duration.ts";
export { SupervisorError, type SupervisorErrorCode } from "./errors.ts";
export {
  type LaunchOptions,
  launchSupervisor,
  readHandedSecrets,
  withSecretsFrom,
} from "./launch.ts";
export { checkSandboxName, generateSandboxName } from "./names.ts";
export {
  listEntries,
  listLive,
  pruneRegistry,
  readEntry,
  registryDir,
  removeStale,
  resolveSandbox,
  type SandboxEntry,
  type SandboxRecord,
  type SandboxState,
} from "./registry.ts";
export {
  controlSocketIn,
  decodeSpec,
  encodeSpec,
  liveCheckpointInfo,
  serialized,
  supervise,
  type SuperviseSpec,
} from "./supervise.ts";
