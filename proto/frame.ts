/**
 * Frame codec of the agent protocol, without I/O: {@link FrameDecoder} is fed bytes and yields
 * frames; {@link encodeFrame}/{@link writeHeader} produce bytes. Every header is validated before
 * the payload is awaited, so garbage is detected after 12 bytes, and no length is trusted before
 * it is checked against the caps in `constants.ts`.
 *
 * @module
 */

import {
  ALLOWED_FLAGS,
  CHANNEL_FRAMES,
  CONNECTION_FRAMES,
  FrameType,
  frameTypeName,
  HEADER_FIELD,
  HEADER_LEN,
  JSON_FRAMES,
  MAX_CHANNELS,
  MAX_FRAME_PAYLOAD,
  MAX_JSON_PAYLOAD,
  PING_PAYLOAD_LEN,
  WINDOW_PAYLOAD_LEN,
} from "./constants.ts";
import { ConnectionError } from "./errors.ts";

/** One decoded frame. `payload` may be a view into a buffer fed to the decoder (no copy). */
export interface Frame {
  /** Frame type (see {@link FrameType}). */
  type: FrameType;
  /** Flag bits, already checked against the type. */
  flags: number;
  /** Channel within the stream (non-zero only for DATA and WINDOW). */
  channel: number;
  /** Stream id; 0 for connection frames. */
  stream: number;
  /** Payload bytes. */
  payload: Uint8Array;
}

/** The validated fixed header of a frame. */
export interface FrameHeader {
  /** Frame type. */
  type: FrameType;
  /** Flag bits. */
  flags: number;
  /** Channel. */
  channel: number;
  /** Stream id. */
  stream: number;
  /** Payload length in bytes. */
  length: number;
}

/** Options of {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest DATA payload accepted (JSON frames are capped at MAX_JSON_PAYLOAD). @default MAX_FRAME_PAYLOAD */
  maxPayload?: number;
  /** Initial buffer size (at least two maximum frames). */
  bufferSize?: number;
}

function malformed(what: string): ConnectionError {
  return new ConnectionError("malformed", `Cannot decode frame: ${what}`);
}

/**
 * Parses and validates a 12-byte header at `offset` of `bytes` (which must hold 12 bytes there).
 * Throws {@link ConnectionError} `"malformed"` naming the field and the reason.
 */
export function parseHeader(
  bytes: Uint8Array,
  offset: number,
  options: { maxPayload?: number } = {},
): FrameHeader {
  const maxPayload = options.maxPayload ?? MAX_FRAME_PAYLOAD;
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_LEN);
  const type = view.getUint8(HEADER_FIELD.TYPE);
  const flags = view.getUint8(HEADER_FIELD.FLAGS);
  const channel = view.getUint8(HEADER_FIELD.CHANNEL);
  const reserved = view.getUint8(HEADER_FIELD.RESERVED);
  const stream = view.getUint32(HEADER_FIELD.STREAM);
  const length = view.getUint32(HEADER_FIELD.LENGTH);
  if (type < FrameType.HELLO || type > FrameType.GOAWAY) {
    throw malformed(`unknown frame type 0x${type.toString(16).padStart(2, "0")}`);
  }
  const name = frameTypeName(type);
  if (reserved !== 0) throw malformed(`${name} reserved byte is ${reserved}, must be 0`);
  const allowed = ALLOWED_FLAGS[type as FrameType];
  if ((flags & ~allowed) !== 0) {
    throw malformed(`${name} has undefined flags 0x${flags.toString(16)}`);
  }
  if (CONNECTION_FRAMES.has(type)) {
    if (stream !== 0) throw malformed(`${name} on stream ${stream}, must be stream 0`);
  } else if (stream === 0) {
    throw malformed(`${name} on stream 0, needs a stream id`);
  }
  if (channel !== 0 && !CHANNEL_FRAMES.has(type)) {
    throw malformed(`${name} has channel ${channel}, must be 0`);
  }
  if (channel >= MAX_CHANNELS) {
    throw malformed(`${name} channel ${channel} out of range (max ${MAX_CHANNELS - 1})`);
  }
  if (type === FrameType.WINDOW && length !== WINDOW_PAYLOAD_LEN) {
    throw malformed(`WINDOW payload is ${length} bytes, must be ${WINDOW_PAYLOAD_LEN}`);
  }
  if (type === FrameType.PING && length !== PING_PAYLOAD_LEN) {
    throw malformed(`PING payload is ${length} bytes, must be ${PING_PAYLOAD_LEN}`);
  }
  if (JSON_FRAMES.has(type) && length > MAX_JSON_PAYLOAD) {
    throw malformed(`${name} payload of ${length} bytes exceeds ${MAX_JSON_PAYLOAD}`);
  }
  // maxPayload (the receiver's announced maxFrame) bounds DATA; JSON frames have their own cap.
  if (type === FrameType.DATA && length > maxPayload) {
    throw malformed(`${name} payload of ${length} bytes exceeds ${maxPayload}`);
  }
  if (length > MAX_FRAME_PAYLOAD) {
    throw malformed(`${name} payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  }
  return { type: type as FrameType, flags, channel, stream, length };
}

/** Writes a 12-byte header at `offset` of `target`. Values are not validated. */
export function writeHeader(
  target: Uint8Array,
  offset: number,
  header: FrameHeader,
): void {
  const view = new DataView(target.buffer, target.byteOffset + offset, HEADER_LEN);
  view.setUint8(HEADER_FIELD.TYPE, header.type);
  view.setUint8(HEADER_FIELD.FLAGS, header.flags);
  view.setUint8(HEADER_FIELD.CHANNEL, header.channel);
  view.setUint8(HEADER_FIELD.RESERVED, 0);
  view.setUint32(HEADER_FIELD.STREAM, header.stream);
  view.setUint32(HEADER_FIELD.LENGTH, header.length);
}

/** Encodes a whole frame (header + copy of the payload) into a new buffer. */
export function encodeFrame(frame: Frame): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + frame.payload.length);
  writeHeader(out, 0, { ...frame, length: frame.payload.length });
  out.set(frame.payload, HEADER_LEN);
  return out;
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** Encodes a JSON payload; throws RangeError if it exceeds {@link MAX_JSON_PAYLOAD}. */
export function encodeJson(value: unknown): Uint8Array {
  const bytes = utf8.encode(JSON.stringify(value));
  if (bytes.length > MAX_JSON_PAYLOAD) {
    throw new RangeError(
      `Cannot encode message: ${bytes.length} bytes of JSON exceed ${MAX_JSON_PAYLOAD}`,
    );
  }
  return bytes;
}

/**
 * Decodes a JSON payload that must be an object (untrusted input); throws
 * {@link ConnectionError} `"malformed"` otherwise.
 */
export function decodeJson(payload: Uint8Array, type: number): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8Strict.decode(payload));
  } catch (err) {
    throw new ConnectionError(
      "malformed",
      `Cannot decode ${frameTypeName(type)} payload: not UTF-8 JSON`,
      { cause: err },
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed(`${frameTypeName(type)} payload is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Reads the u32 increment of a WINDOW payload. */
export function windowIncrement(payload: Uint8Array): number {
  return new DataView(payload.buffer, payload.byteOffset, payload.length).getUint32(0);
}

/** Builds a WINDOW payload. */
export function windowPayload(increment: number): Uint8Array {
  const out = new Uint8Array(WINDOW_PAYLOAD_LEN);
  new DataView(out.buffer).setUint32(0, increment);
  return out;
}

/**
 * Sans-I/O frame decoder over one contiguous buffer it owns. Feed it with {@link push} (copies
 * the bytes in), or, to read straight into it without a copy, {@link space} + {@link commit};
 * then call {@link next} until it returns `undefined`.
 *
 * Payloads returned by {@link next} are views into the decoder's buffer and stay valid only
 * until the next `push`/`space` call: copy what you keep (the Mux copies DATA payloads once,
 * which is the only copy a received byte makes in user space). The buffer holds one maximum-size
 * frame at least; a partial frame is moved to the front (memmove) only when space runs out.
 * After it has thrown, the decoder stays failed: the connection must be dropped.
 */
export class FrameDecoder {
  #buf: Uint8Array;
  #size: number; // byte length of #buf (kept apart: a BYOB transfer detaches #buf)
  #start = 0; // first unconsumed byte
  #end = 0; // end of valid bytes
  #header: FrameHeader | undefined;
  #maxPayload: number;
  #failed: ConnectionError | undefined;

  /** Creates a decoder. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = Math.min(options.maxPayload ?? MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD);
    const largest = Math.max(this.#maxPayload, MAX_JSON_PAYLOAD) + HEADER_LEN;
    const size = Math.max(options.bufferSize ?? 0, 2 * largest);
    this.#buf = new Uint8Array(size);
    this.#size = size;
  }

  /** Bytes received and not yet returned as frames. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Returns a region to read at least `min` bytes into (at most the whole free tail), moving a
   * partial frame to the front or growing the buffer if needed. Call {@link commit} after.
   */
  space(min = 1): Uint8Array {
    if (this.#buf.length - this.#end < min) {
      const pending = this.#end - this.#start;
      if (pending + min > this.#buf.length) {
        const grown = new Uint8Array(Math.max(this.#buf.length * 2, pending + min));
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
        this.#size = grown.length;
      } else {
        this.#buf.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = pending;
    }
    return this.#buf.subarray(this.#end);
  }

  /** Declares that `n` bytes were written at the start of the last {@link space} region. */
  commit(n: number): void {
    if (n < 0 || this.#end + n > this.#buf.length) {
      throw new RangeError(`Cannot commit ${n} bytes: only ${this.#buf.length - this.#end} free`);
    }
    this.#end += n;
  }

  /**
   * Re-attaches the decoder to its buffer after a BYOB read into {@link space} transferred it:
   * `view` is what the reader returned (same memory, new ArrayBuffer).
   */
  adopt(view: Uint8Array): void {
    // (this.#buf itself is detached by now: the transfer emptied it.)
    if (view.buffer.byteLength !== this.#size) {
      throw new RangeError("Cannot adopt buffer: it is not the one space() returned");
    }
    this.#buf = new Uint8Array(view.buffer as ArrayBuffer);
  }

  /** Copies received bytes in. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.space(chunk.length).set(chunk);
    this.#end += chunk.length;
  }

  /** Returns the next complete frame, or `undefined` if more bytes are needed. */
  next(): Frame | undefined {
    if (this.#failed) throw this.#failed;
    try {
      if (!this.#header) {
        if (this.#end - this.#start < HEADER_LEN) return undefined;
        this.#header = parseHeader(this.#buf, this.#start, { maxPayload: this.#maxPayload });
        this.#start += HEADER_LEN;
      }
      const header = this.#header;
      if (this.#end - this.#start < header.length) return undefined;
      const payload = this.#buf.subarray(this.#start, this.#start + header.length);
      this.#start += header.length;
      if (this.#start === this.#end) this.#start = this.#end = 0;
      this.#header = undefined;
      return {
        type: header.type,
        flags: header.flags,
        channel: header.channel,
        stream: header.stream,
        payload,
      };
    } catch (err) {
      this.#failed = err instanceof ConnectionError ? err : malformed(String(err));
      throw this.#failed;
    }
  }

  /**
   * Declares the end of input. Throws {@link ConnectionError} `"truncated"` if a partial frame
   * is buffered.
   */
  finish(): void {
    if (this.#failed) throw this.#failed;
    const pending = this.#end - this.#start;
    if (this.#header) {
      this.#failed = new ConnectionError(
        "truncated",
        `Cannot decode ${frameTypeName(this.#header.type)} frame: connection ended after ` +
          `${pending} of ${this.#header.length} payload bytes`,
      );
      throw this.#failed;
    }
    if (pending > 0) {
      this.#failed = new ConnectionError(
        "truncated",
        `Cannot decode frame: connection ended after ${pending} of ${HEADER_LEN} header bytes`,
      );
      throw this.#failed;
    }
  }
}
