/**
 * Newline-delimited JSON over a channel (read_dir entries, watch events): one JSON object per
 * line, each line capped at {@link MAX_JSON_LINE} bytes, so a hostile peer cannot make the
 * reader buffer without bound.
 *
 * @module
 */

import { ConnectionError } from "./errors.ts";
import { MAX_JSON_LINE } from "./messages.ts";

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** Encodes one object as a JSON line (`{...}\n`); throws RangeError over the line cap. */
export function encodeJsonLine(value: Record<string, unknown>): Uint8Array {
  const bytes = utf8.encode(JSON.stringify(value) + "\n");
  if (bytes.length > MAX_JSON_LINE) {
    throw new RangeError(`Cannot encode line: ${bytes.length} bytes exceed ${MAX_JSON_LINE}`);
  }
  return bytes;
}

/**
 * Parses JSON lines from a byte stream, yielding objects. Throws {@link ConnectionError}
 * `"malformed"` on a line over the cap, invalid UTF-8/JSON, or a non-object.
 */
export async function* readJsonLines(
  readable: ReadableStream<Uint8Array>,
): AsyncGenerator<Record<string, unknown>> {
  let pending: Uint8Array[] = [];
  let pendingLen = 0;
  const parse = (line: Uint8Array): Record<string, unknown> => {
    let v: unknown;
    try {
      v = JSON.parse(utf8Strict.decode(line));
    } catch (err) {
      throw new ConnectionError("malformed", "Cannot decode JSON line: not UTF-8 JSON", {
        cause: err,
      });
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new ConnectionError("malformed", "Cannot decode JSON line: not a JSON object");
    }
    return v as Record<string, unknown>;
  };
  for await (const chunk of readable) {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) {
        pendingLen += chunk.length - start;
        if (pendingLen > MAX_JSON_LINE) {
          throw new ConnectionError(
            "malformed",
            `Cannot decode JSON line: longer than ${MAX_JSON_LINE} bytes`,
          );
        }
        pending.push(chunk.subarray(start));
        break;
      }
      let line = chunk.subarray(start, nl);
      if (pending.length > 0) {
        const joined = new Uint8Array(pendingLen + line.length);
        let o = 0;
        for (const p of pending) {
          joined.set(p, o);
          o += p.length;
        }
        joined.set(line, o);
        line = joined;
        pending = [];
        pendingLen = 0;
      }
      if (line.length > MAX_JSON_LINE) {
        throw new ConnectionError(
          "malformed",
          `Cannot decode JSON line: longer than ${MAX_JSON_LINE} bytes`,
        );
      }
      if (line.length > 0) yield parse(line);
      start = nl + 1;
    }
  }
  if (pendingLen > 0) {
    throw new ConnectionError("truncated", "Cannot decode JSON line: stream ended mid-line");
  }
}
