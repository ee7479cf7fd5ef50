/**
 * The host-side sandbox API: connect to a guest agent and run processes (buffered, streaming,
 * interactive), move files of any size, watch paths, forward ports. Errors from the guest are
 * typed (`AgentNotFoundError`, `AgentPermissionDeniedError`, ...; all `AgentError` with a `code`); a broken
 * connection is a `ConnectionError`.
 *
 * @example
 * ```ts ignore
 * import { AgentConnection } from "./mod.ts";
 * await using sb = await AgentConnection.connectUnix("/tmp/agent.sock");
 * const out = await sb.exec(["sh", "-c", "echo hi; exit 3"]);
 * console.log(new TextDecoder().decode(out.stdout), out.exitCode); // "hi\n" 3
 * ```
 *
 * @module
 */

export {
  AgentConnection,
  type AgentConnectOptions,
  type AgentExecOptions,
  type AgentWriteFileOptions,
  type WatchOptions,
} from "./connection.ts";
export {
  AgentProcess,
  type AgentSpawnOptions,
  type ExecOutput,
  type ExitStatus,
  type TtyOptions,
} from "./process.ts";
export { PortForward } from "./forward.ts";
export { applySpawnDefaults, type SpawnDefaults } from "./spawn_defaults.ts";
export {
  AgentAlreadyExistsError,
  AgentError,
  type AgentErrorCode,
  AgentInvalidArgumentError,
  AgentIsADirectoryError,
  AgentNotADirectoryError,
  AgentNotEmptyError,
  AgentNotFoundError,
  AgentPermissionDeniedError,
  ConnectionError,
  type ConnectionErrorCode,
  type DirEntry,
  type FileInfo,
  type FileType,
  type WatchEvent,
  type WatchEventKind,
} from "../proto/mod.ts";
