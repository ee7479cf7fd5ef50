/**
 * Newline-delimited JSON over a channel (read_dir entries, watch events): one JSON object per
 * line, each line capped at {@link MAX_JSON_LINE} bytes, so a hostile peer cannot make the
 * reader buffer without bound. The framing is io's {@linkcode LineDecoder} with the strict
 * policy: an oversized line, invalid UTF-8 or a line cut by the end of the stream breaks it.
 *
 * @module
 */

import { type DecodedLine, encodeLine, LineDecoder, LineTooLongError } from "../io/mod.ts";
import { ConnectionError } from "./errors.ts";
import { MAX_JSON_LINE } from "./messages.ts";

/** Encodes one object as a JSON line (`{...}\n`); throws RangeError over the line cap. */
export function encodeJsonLine(value: Record<string, unknown>): Uint8Array {
  const bytes = encodeLine(value);
  if (bytes.length > MAX_JSON_LINE) {
    throw new RangeError(`Cannot encode line: ${bytes.length} bytes exceed ${MAX_JSON_LINE}`);
  }
  return bytes;
}

function parse(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ConnectionError("malformed", "Cannot decode JSON line: not UTF-8 JSON", {
      cause: err,
    });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConnectionError("malformed", "Cannot decode JSON line: not a JSON object");
  }
  return v as Record<string, unknown>;
}

/**
 * Parses JSON lines from a byte stream, yielding objects. Throws {@link ConnectionError}
 * `"malformed"` on a line over the cap, invalid UTF-8/JSON, or a non-object, and `"truncated"`
 * when the stream ends inside a line.
 */
export async function* readJsonLines(
  readable: ReadableStream<Uint8Array>,
): AsyncGenerator<Record<string, unknown>> {
  const decoder = new LineDecoder({ maxLineBytes: MAX_JSON_LINE, overflow: "fail", fatal: true });
  const lines = (chunk: Uint8Array | null): Array<DecodedLine | null> => {
    try {
      return chunk === null ? [decoder.finish()] : decoder.push(chunk);
    } catch (err) {
      const why = err instanceof LineTooLongError
        ? `longer than ${MAX_JSON_LINE} bytes`
        : "not UTF-8 JSON";
      throw new ConnectionError("malformed", `Cannot decode JSON line: ${why}`, { cause: err });
    }
  };
  for await (const chunk of readable) {
    for (const line of lines(chunk)) if (line?.kind === "line") yield parse(line.text);
  }
  const [last] = lines(null);
  if (last) {
    throw new ConnectionError("truncated", "Cannot decode JSON line: stream ended mid-line");
  }
}
