/**
 * Named sandboxes: a detached supervisor per sandbox (owning QEMU and the NBD server, serving the
 * control protocol on `<instance>/control.sock`) and a registry of them under
 * `<home>/sandboxes/`. See docs/sandboxes.md.
 *
 * @module
 */

export { SupervisorError, type SupervisorErrorCode } from "./errors.ts";
export {
  detachFromTerminal,
  launchSupervisor,
  type LaunchSupervisorOptions,
  readHandedSecrets,
  withSecretsFrom,
} from "./launch.ts";
export { checkSandboxName, generateSandboxName } from "./names.ts";
export {
  listEntries,
  listLive,
  pruneRegistry,
  readEntry,
  removeStale,
  resolveSandbox,
  type SandboxEntry,
  type SandboxRecord,
  type SandboxState,
} from "./registry.ts";
export { decodeSpec, encodeSpec, supervise, type SuperviseSpec } from "./supervise.ts";
