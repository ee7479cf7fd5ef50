/**
 * The host↔guest agent protocol, imported by both ends (the host `Sandbox` and the guest
 * agent): a sans-I/O frame codec, a stream multiplexer with per-channel credit flow control
 * over any ordered byte stream, typed request/result messages and the two error families.
 * The wire format is specified in docs/agent_protocol.md.
 *
 * @example Accepting streams (agent side)
 * ```ts ignore
 * import { Mux, parseRequest } from "./mod.ts";
 * const conn = await Deno.connect({ transport: "unix", path: "/tmp/agent.sock" });
 * const mux = await Mux.connect(conn, { role: "guest", version: "0.1.0" });
 * for await (const stream of mux) {
 *   const req = parseRequest(stream.request);
 *   // ... serve req, then: await stream.close({ ... }) or stream.reset({ code, message })
 * }
 * ```
 *
 * @module
 */

export {
  AGENT_START_MARKER,
  INITRAMFS_MARKER,
  POWER_OFF_MARKER,
  PROBE_MARKER,
  ROOT_SERIAL,
  TOOLS_SERIAL,
} from "./boot.ts";
export * from "./constants.ts";
export { parseSignal, type SignalName, signalName, SIGNALS } from "./signals.ts";
export * from "./errors.ts";
export {
  decodeJson,
  encodeFrame,
  encodeJson,
  type Frame,
  FrameDecoder,
  type FrameDecoderOptions,
  type FrameHeader,
  parseHeader,
  writeHeader,
} from "./frame.ts";
export * from "./messages.ts";
export {
  type ByteStream,
  type Hello,
  Mux,
  type MuxOptions,
  type OpenOptions,
  type Role,
} from "./mux.ts";
export { MuxChannel } from "./channel.ts";
export { MuxStream } from "./stream.ts";
export { OUT_HIGH_WATER } from "./out_queue.ts";
export { encodeJsonLine, readJsonLines } from "./ndjson.ts";
