/**
 * The control protocol: JSON-RPC 2.0 over newline-delimited JSON, served on a sandbox's control
 * socket and on `shuru run --stdio`; every front end (CLI, SDK, MCP) speaks it.
 * See docs/control_protocol.md.
 *
 * @module
 */

export type {
  AdoptedProcess,
  BackendDirEntry,
  BackendExit,
  BackendFileEvent,
  BackendProcess,
  BackendSpawnOptions,
  BackendStat,
  BackendWatch,
  CheckpointReport,
  ControlBackend,
} from "./backend.ts";
export { agentBackend, type AgentBackendOptions } from "./agent_backend.ts";
export { type Clock, realClock } from "./clock.ts";
export {
  connectControl,
  ControlClient,
  type ControlClientOptions,
  type ControlNotification,
  type RequestOptions,
} from "./client.ts";
export {
  ControlConnectionError,
  type ControlConnectionErrorCode,
  RpcError,
  type RpcErrorObject,
} from "./errors.ts";
export { ControlServer, type ControlServerOptions } from "./server.ts";
export { ControlSession } from "./session.ts";
export type { ServerLimits } from "./handler.ts";
export {
  type ControlSocket,
  listenControlSocket,
  type ListenControlSocketOptions,
} from "./socket.ts";
export { serveStdio } from "./stdio.ts";
export { type ControlService, serveControl, type ServeControlOptions } from "./serve.ts";
export {
  CONTROL_PROTOCOL_VERSION,
  ERROR_KINDS,
  type ErrorKind,
  KILL_SIGNALS,
  Limits,
  type Method,
  METHODS,
  type NotificationName,
  NOTIFICATIONS,
  RpcErrorCode,
  rpcErrorCodeName,
} from "./wire.ts";
