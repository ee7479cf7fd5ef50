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
  /** Largest DATA payload accepted. @default MAX_FRAME_PAYLOAD */
  maxPayload?: number;
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
  maxPayload: number = MAX_FRAME_PAYLOAD,
): FrameHeader {
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
  if (length > maxPayload) {
    throw malformed(`${name} payload of ${length} bytes exceeds ${maxPayload}`);
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
 * Sans-I/O frame decoder: {@link push} bytes as they arrive, then call {@link next} until it
 * returns `undefined`. Payloads that lie within one pushed chunk are returned as views into it
 * (so do not reuse chunks after pushing them); payloads split across chunks are copied once.
 * After it has thrown, the decoder stays failed: the connection must be dropped.
 */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #offset = 0; // read position in #chunks[0]
  #buffered = 0;
  #header: FrameHeader | undefined;
  #maxPayload: number;
  #failed: ConnectionError | undefined;
  #scratch = new Uint8Array(HEADER_LEN);

  /** Creates a decoder. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = Math.min(options.maxPayload ?? MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD);
  }

  /** Bytes pushed but not yet returned as frames. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Appends received bytes. The decoder keeps a reference to `chunk` (no copy). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /** Returns the next complete frame, or `undefined` if more bytes are needed. */
  next(): Frame | undefined {
    if (this.#failed) throw this.#failed;
    try {
      if (!this.#header) {
        if (this.#buffered < HEADER_LEN) return undefined;
        const head = this.#take(HEADER_LEN, true);
        this.#header = parseHeader(head, 0, this.#maxPayload);
      }
      const header = this.#header;
      if (this.#buffered < header.length) return undefined;
      const payload = this.#take(header.length, false);
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
    if (this.#header) {
      this.#failed = new ConnectionError(
        "truncated",
        `Cannot decode ${frameTypeName(this.#header.type)} frame: connection ended after ` +
          `${this.#buffered} of ${this.#header.length} payload bytes`,
      );
      throw this.#failed;
    }
    if (this.#buffered > 0) {
      this.#failed = new ConnectionError(
        "truncated",
        `Cannot decode frame: connection ended after ${this.#buffered} of ${HEADER_LEN} ` +
          `header bytes`,
      );
      throw this.#failed;
    }
  }

  /** Removes `n` buffered bytes (n <= buffered), as a view when possible. */
  #take(n: number, header: boolean): Uint8Array {
    this.#buffered -= n;
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[0]!;
    const avail = first.length - this.#offset;
    if (avail >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
      this.#offset += n;
      if (this.#offset === first.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
      return out;
    }
    const out = header ? this.#scratch : new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#offset, n - filled);
      out.set(chunk.subarray(this.#offset, this.#offset + count), filled);
      filled += count;
      this.#offset += count;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    return out;
  }
}
