/**
 * The TypeScript SDK, shuru's public face: {@linkcode Sandbox} drives a running sandbox through
 * its control socket (docs/control_protocol.md), nothing else; `Sandbox.create` boots one with
 * `shuru start`.
 *
 * @module
 */

export { CONTROL_SOCKET_NAME, VERSION } from "../host/mod.ts";
export {
  type ConnectOptions,
  controlSocketPath,
  type CreateOptions,
  type ExecOptions,
  type ExecResult,
  type ProcessInfo,
  type ProcessOutput,
  Sandbox,
  type SpawnOptions,
} from "./sandbox.ts";
export {
  type SandboxDirEntry,
  type SandboxFileInfo,
  SandboxFs,
  type SandboxFsEvent,
  type SandboxFsWatcher,
  type WriteFileOptions,
} from "./fs.ts";
export { type ProcessStatus, SandboxProcess } from "./process.ts";
export {
  AlreadyExistsError,
  ConnectionClosedError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ProcessNotFoundError,
  SandboxError,
  type SandboxErrorCode,
  TimeoutError,
} from "./errors.ts";
