/**
 * Native code through Deno FFI, for what Deno has no API for.
 *
 * - libc: PTYs, `posix_spawn` in a new session, non-blocking file descriptors as streams and a
 *   `poll` loop. The guest agent uses it; the wrappers throw `LibcError` with the errno instead
 *   of returning `-1`.
 * - macOS (the VZ backend): the Objective-C runtime, blocks laid out per the Block ABI, the main
 *   run loop pump, connected Unix sockets for `NSFileHandle`, and library names per OS.
 *
 * @module
 */

export * as libc from "./libc.ts";
export { FdStream, type FdStreamOptions } from "./fd_stream.ts";
export { Poller, poller, type PollWaitOptions } from "./poller.ts";
export { Pty, type PtyProcess, spawnPty, type SpawnPtyOptions, type WindowSize } from "./pty.ts";
export {
  PIPE_BYTES,
  type PipedChild,
  type SpawnedChild,
  spawnOnTerminal,
  type SpawnOnTerminalOptions,
  spawnPiped,
  type SpawnPipedOptions,
  type StdinMode,
  waitForExit,
} from "./spawn.ts";
export { Block, type BlockOptions, BlockScope } from "./block.ts";
export { isMainThread, mainRunLoop, pumpPolicy, type RunLoop, RunLoopPump } from "./cf.ts";
export {
  Objc,
  ObjcError,
  type ObjcErrorCode,
  type Ptr,
  type RuntimeClass,
  type Signature,
} from "./objc.ts";
export {
  type HostOs,
  hostOs,
  LibraryError,
  type LibraryName,
  libraryPath,
  openLibrary,
} from "./platform.ts";
export {
  closeFd,
  connectUnixSocket,
  maxSocketPath,
  SocketError,
  type UnixSocketOptions,
} from "./unix_socket.ts";
