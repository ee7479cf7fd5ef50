/**
 * The host-side sandbox API: connect to a guest agent and run processes (buffered, streaming,
 * interactive), move files of any size, watch paths, forward ports. Errors from the guest are
 * typed (`NotFoundError`, `PermissionDeniedError`, ...; all `AgentError` with a `code`); a broken
 * connection is a `ConnectionError`.
 *
 * @example
 * ```ts ignore
 * import { Sandbox } from "./mod.ts";
 * await using sb = await Sandbox.connectUnix("/tmp/agent.sock");
 * const out = await sb.exec(["sh", "-c", "echo hi; exit 3"]);
 * console.log(new TextDecoder().decode(out.stdout), out.exitCode); // "hi\n" 3
 * ```
 *
 * @module
 */

export {
  type ConnectOptions,
  type ExecOptions,
  Sandbox,
  type WatchOptions,
  type WriteFileOptions,
} from "./connection.ts";
export {
  type ExecOutput,
  type ExitStatus,
  SandboxProcess,
  type SpawnOptions,
  type TtyOptions,
} from "./process.ts";
export { PortForward } from "./forward.ts";
export type { ShellOptions } from "./shell.ts";
export {
  AgentError,
  AlreadyExistsError,
  ConnectionError,
  type ConnectionErrorCode,
  type DirEntry,
  type ErrorCode,
  type FileInfo,
  type FileType,
  InvalidArgumentError,
  IsADirectoryError,
  NotADirectoryError,
  NotEmptyError,
  NotFoundError,
  PermissionDeniedError,
  type WatchEvent,
  type WatchEventKind,
} from "../proto/mod.ts";
