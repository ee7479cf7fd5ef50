/**
 * libc through Deno FFI, for what Deno has no API for: PTYs, `posix_spawn` in a new session,
 * non-blocking file descriptors as streams and a `poll` loop. The guest agent uses it; the
 * wrappers throw `LibcError` with the errno instead of returning `-1`.
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
