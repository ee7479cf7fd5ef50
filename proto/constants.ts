/**
 * Wire constants of the shuru agent protocol, in one place (see docs/agent_protocol.md).
 *
 * Every frame starts with a fixed 12-byte header, all integers big-endian:
 *
 * ```text
 *  0      1      2        3         4               8               12
 *  +------+------+--------+---------+---------------+---------------+----------
 *  | type | flags| channel| reserved|   stream id   |    length     | payload…
 *  +------+------+--------+---------+---------------+---------------+----------
 * ```
 *
 * @module
 */

/** Protocol major version; peers with a different major refuse each other in HELLO. */
export const AGENT_PROTOCOL_VERSION = 1;

/** Magic string carried in the HELLO payload, so a wrong peer is spotted at once. */
export const HELLO_MAGIC = "shuru-agent";

/** Byte offsets of the header fields. */
export const HEADER_FIELD = {
  TYPE: 0,
  FLAGS: 1,
  CHANNEL: 2,
  RESERVED: 3,
  STREAM: 4,
  LENGTH: 8,
} as const;

/** Size of the fixed frame header in bytes. */
export const HEADER_LEN = 12;

/** Frame types. */
export const FrameType = {
  /** Stream 0. JSON `Hello`; the first frame each side sends. */
  HELLO: 0x01,
  /** Opens a stream (id chosen by the opener); JSON request header. */
  OPEN: 0x02,
  /** Raw bytes on (stream, channel); flag FIN ends that direction of the channel. */
  DATA: 0x03,
  /** Grants the sender of DATA on (stream, channel) more credit: u32 byte increment. */
  WINDOW: 0x04,
  /** A JSON control message inside a stream (resize, signal, started, ...). */
  MESSAGE: 0x05,
  /** Sent by the side that accepted the stream: final JSON result; the stream is finished. */
  CLOSE: 0x06,
  /** Aborts a stream from either side; JSON `{code, message}`; the stream is finished. */
  RESET: 0x07,
  /** Stream 0. 8 opaque bytes; answered with the same bytes and flag ACK. */
  PING: 0x08,
  /** Stream 0. JSON `{code, message}`: the sender is ending the connection. */
  GOAWAY: 0x09,
} as const;

/** A frame type value. */
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Frame flags. */
export const FrameFlag = {
  /** DATA: the sender will send no more bytes on this channel (half-close). */
  FIN: 0x01,
  /** PING: this frame is the answer to a PING. */
  ACK: 0x01,
} as const;

const FRAME_TYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(FrameType).map(([name, value]) => [value, name]),
);

/** Returns the name of a frame type for logs (`"DATA"`), or `"UNKNOWN(0x..)"`. */
export function frameTypeName(type: number): string {
  return FRAME_TYPE_NAMES[type] ?? `UNKNOWN(0x${type.toString(16).padStart(2, "0")})`;
}

/** Flags allowed per frame type; any other bit set is a protocol error. */
export const ALLOWED_FLAGS: Record<FrameType, number> = {
  [FrameType.HELLO]: 0,
  [FrameType.OPEN]: 0,
  [FrameType.DATA]: FrameFlag.FIN,
  [FrameType.WINDOW]: 0,
  [FrameType.MESSAGE]: 0,
  [FrameType.CLOSE]: 0,
  [FrameType.RESET]: 0,
  [FrameType.PING]: FrameFlag.ACK,
  [FrameType.GOAWAY]: 0,
};

/** Frame types that travel on stream 0 (connection level); all others need a stream id > 0. */
export const CONNECTION_FRAMES: ReadonlySet<number> = new Set([
  FrameType.HELLO,
  FrameType.PING,
  FrameType.GOAWAY,
]);

/** Frame types whose channel byte may be non-zero. */
export const CHANNEL_FRAMES: ReadonlySet<number> = new Set([FrameType.DATA, FrameType.WINDOW]);

/** Frame types whose payload is a UTF-8 JSON object. */
export const JSON_FRAMES: ReadonlySet<number> = new Set([
  FrameType.HELLO,
  FrameType.OPEN,
  FrameType.MESSAGE,
  FrameType.CLOSE,
  FrameType.RESET,
  FrameType.GOAWAY,
]);

/** Channels per stream (0..MAX_CHANNELS-1). Exec uses 0 = stdin, 1 = stdout, 2 = stderr. */
export const MAX_CHANNELS = 4;

/** Well-known channel numbers for exec streams. */
export const Channel = {
  /** Host → guest: process stdin (PTY input when tty). Also the only channel of other ops. */
  STDIN: 0,
  /** Guest → host: process stdout (the PTY output when tty). */
  STDOUT: 1,
  /** Guest → host: process stderr (unused when tty). */
  STDERR: 2,
  /** The single channel of non-exec streams (read_file, write_file, forward, watch, ...). */
  MAIN: 0,
} as const;

/** Hard cap on any frame payload; a larger length field is a protocol error. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;

/** Hard cap on JSON payloads (HELLO, OPEN, MESSAGE, CLOSE, RESET, GOAWAY). */
export const MAX_JSON_PAYLOAD = 256 * 1024;

/** Payload size of WINDOW frames. */
export const WINDOW_PAYLOAD_LEN = 4;

/** Payload size of PING frames. */
export const PING_PAYLOAD_LEN = 8;

/** Default DATA payload size a sender uses (peers may announce a smaller `maxFrame`). */
export const DEFAULT_MAX_DATA = 256 * 1024;

/** Default initial receive window per channel, announced in HELLO. */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;

/** Largest window a peer may build up on one channel (prevents overflow games). */
export const MAX_WINDOW = 1 << 30;

/** Default cap on concurrently open streams per connection (each direction). */
export const DEFAULT_MAX_STREAMS = 1024;

/** Cap on MESSAGE frames queued unread on one stream before it is reset. */
export const MAX_QUEUED_MESSAGES = 256;

/** Largest stream id (u32). */
export const MAX_STREAM_ID = 0xffff_ffff;
